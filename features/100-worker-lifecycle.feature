@one_node
Feature: A worker from spawn to ready
  The queen has the node's helper spawn a worker in a session of its own, so
  it outlives the helper and the SSH session; the worker binds a free port on
  the node's loopback, writes it to a state file, loads the model while its
  /health answers 503, and serves only callers with its own token.

  From the original's area 100, changed: the worker picks its own port (it
  binds port 0), so "port 8001 is busy, so it moves to 8002" cannot happen, and
  there is no ready callback (the queen polls /health through the SSH forward).
  Left out: loading progress by layers (tests/test_worker_server.py reads it
  from /v1/ready) and a loading timeout, LOADING_TIMEOUT (the tiny model loads
  in well under a second, so nothing here is slow enough to time out).

  Scenario: A worker runs in its own session, with its files on the node
    Given the worker for file:{model} on "local" is ready
    When I GET /v2/workers/list as the owner
    Then the one worker listed is idle on "local" serving file:{model} with torch on the CPU
    And its process leads a session of its own
    And the node keeps a pid file, a log and a state file for the worker

  Scenario: A worker listens on the node's loopback only
    Given the worker for file:{model} on "local" is ready
    When I GET /v2/workers/list as the owner
    Then the one worker listed is idle on "local" serving file:{model} with torch on the CPU
    And its port is open on 127.0.0.1 and on no other address

  Scenario: A worker answers its /health to anyone and nothing else without its own token
    Given the worker for file:{model} on "local" is ready
    When I GET /v2/workers/list as the owner
    Then the one worker listed is idle on "local" serving file:{model} with torch on the CPU
    And its /health answers 200 without a token
    And its /v1/ready answers 401 without a token and with the queen's token

  Scenario: A model that cannot be loaded fails the start with the worker's last words
    Given a copy of the tiny model whose config.json is cut short
    When I run rbee-keeper infer --node local --model file:{home}/broken-model --prompt "hi"
    Then it fails with exit code 1 and error WORKER_START_FAILED
    And no worker process is left for "{home}/broken-model"
