"""The status page and its JSON twin (to come: Jinja templates, `PAGE_BODY` with the legacy tags)."""
