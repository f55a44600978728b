"""Every message that crosses a process boundary, defined once.

Standard library only: the node helper, the worker, the queen and the keeper
all import it, and the queen uploads it to each node beside the helper and the
worker. Each module is one boundary:

- `worker_events`: the worker's server-sent events (`/v1/inference`).
- `helper_ops`: the helper's JSON-lines RPC ops (name, parameters, result).
- `queen_events`: the queen's `/v2/events` stream.
- `limits`: the sampling parameters' bounds and defaults, which the queen's
  validator, its OpenAPI description and the worker's check are built from.
- `codec`: the JSON encoding all of them use.
- `error_text`: what an error message, from the queen or the keeper, may quote
  of the value it refuses.
"""
