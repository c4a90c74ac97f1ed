"""A fake OpenAI- and Anthropic-compatible upstream for poolgate's tests, demos and benchmarks.

It answers like the real APIs (shapes, status codes, error bodies, rate-limit
headers, SSE framing), records every request it receives, and misbehaves on
request: a key's text picks its behaviour, e.g. `revoked`, `forbidden`,
`noquota`, `ratelimited`, `rpm3`, `fail500`, `overloaded`, `delay200`
(see `behaviour.py`); `echokey` and `redirect` hand the key back
in every channel a reply has (`leaks.py`); `streamerror` starts a stream and
ends it with the API's own error event after a few tokens (`stream_failure.py`);
`orgs2`, `nogpt4`, `noopus` shape the key's account (`accounts.py`).
`POST /_mock/keys/{key}/revive` makes a refused key good again.
"""

from .launch import MockUpstreamHandle, main, run_mock_upstream_in_thread
from .server import MockUpstream, RecordedRequest

__all__ = ["MockUpstream", "MockUpstreamHandle", "RecordedRequest", "main", "run_mock_upstream_in_thread"]
