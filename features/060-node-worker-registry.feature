@one_node
Feature: What a node knows of its own workers
  Each node keeps, under its install path, a pid file (pid, the process's
  start time, argv), a log and a state file (the port) for every worker the
  queen had started there. The queen reads them through the helper: to tell a
  live worker from a reused pid, to show logs, and to re-adopt workers after a
  queen restart (area 120).

  The original's area 060 was the hive daemon's HTTP registry (/v1/health,
  /v1/workers/list, its version). rbee has no daemon on the node, so left out:
  the hive's health and version answers, "malformed JSON from the hive" and
  "keeper 0.1.0 against hive 0.2.0" (the helper is uploaded by the queen that
  talks to it, in a folder named by its content hash, so the two always
  match), and "a hive HTTP timeout with 3 retries" (the SSH session's
  keepalive notices a dead node, area 920). "An idle worker is used at once" is
  area 050's "same worker" scenario; "a busy one answers 503" is area 130's.

  Scenario: The pid file knows the process by its start time, not its pid alone
    Given the worker for file:{model} on "local" is ready
    When I GET /v2/workers/list as the owner
    Then the one worker listed is idle on "local" serving file:{model} with torch on the CPU
    And the node keeps a pid file, a log and a state file for the worker
    And the pid file's start time is the start time of the worker's process

  Scenario: A worker's log is read from its node
    Given the worker for file:{model} on "local" is ready
    When I run rbee-keeper logs --node local --lines 200
    Then it succeeds
    And the output has the worker's own log lines

  Scenario: Logs of a node that does not exist
    When I run rbee-keeper logs --node ghost
    Then it fails with exit code 1 and error NODE_NOT_FOUND
