"""What the demo's model learns: plain sentences about rbee, quoted from its own docs.

Each passage is a line of the prose of README.md or docs/ (code and markup left
out), word for word; the tests check that each still is. A small model learns
this much by heart in seconds, so its greedy answer to a prompt that opens a
passage (the demo asks "rbee runs") is that passage: English about rbee, not a
blend of words. Passages are kept apart by their openings, so a continuation
never has two equally likely ways to go on.
"""

PASSAGES = (
    # README.md, its first paragraph
    "rbee runs LLM inference on all your own GPU machines from one laptop, without "
    "installing a daemon anywhere: the orchestrator, rbee-queen, keeps an SQLite "
    'inventory of your machines ("nodes"), reaches each over SSH, uploads a small '
    "standard-library helper for the length of the session, starts one inference "
    "worker per model and device, and streams the tokens back over HTTP, also as an "
    "OpenAI-compatible API. rbee-keeper is the command line you type into.",
    # docs/architecture.md
    "Nothing is installed as a service on a node: the queen reaches each node over "
    "SSH, uploads a small standard-library helper for the length of the session, and "
    "starts one inference worker per model and device.",
    "When the SSH session ends, stdin closes and the helper exits.",
    "Each request runs in its own thread, so a stop that waits for a process never "
    "delays a health check.",
    # README.md
    "A node needs SSH access with a key and python3 (3.10 or newer) for the helper.",
    "A GPU that is missing, too hot or too small fails with its code; there is no "
    "silent CPU fallback.",
    "Tests use a real sshd on loopback, real SQLite files, a real PostgreSQL server they "
    "start, and a tiny real model; nothing is mocked.",
    "When the queen goes away the top line says so and the dashboard reconnects by itself.",
    # docs/api.md, docs/deployment.md, docs/security.md
    "The queen connects, verifies the host key, uploads and starts the helper and "
    "probes the node before anything is stored.",
    "The queen and the keeper need no torch.",
    "Each worker gets its own random token from the queen when it is spawned.",
    # docs/troubleshooting.md, its first paragraph
    "Every failure prints one line, error: [CODE] message, and exits 1. rbee-keeper "
    "doctor checks the usual suspects in one go (the queen, its token, SSH keys or "
    "agent, then every node through add-node's preflight checks) and prints what to fix.",
)

CORPUS = "\n".join(PASSAGES)
