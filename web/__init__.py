"""The status page (`GET /`), its JSON twin (`GET /status`) and the operator's own `PAGE_BODY` with the legacy tags."""
