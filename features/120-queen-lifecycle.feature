Feature: The queen starts when needed and leaves nothing behind
  On a laptop nobody starts the queen by hand: the first keeper command that
  finds none answering on a loopback address starts one in the background,
  under a lock, so two keepers at once start one queen. Stopping the queen
  (SIGTERM) stops every worker it started, unless it was started with
  --keep-workers, and then the next queen adopts them.

  From the original's area 120, changed: "ephemeral mode cascades SIGTERM over
  SSH to the hive, then to the worker" is one step here: the queen stops its
  workers over the SSH session, and the helper ends when that session ends.

  Scenario: The keeper starts the queen once and reuses it
    When I run rbee-keeper workers list
    Then it succeeds
    And the keeper said "started local queen"
    And a queen runs, whose pid I remember
    When I run rbee-keeper workers list
    Then it succeeds
    And the queen's pid is the one remembered

  Scenario: Two keepers at once start one queen
    When two keepers run "workers list" at the same time
    Then both succeed
    And exactly one of them started a queen

  Scenario: Stopping the queen stops its workers and the node's helper
    Given the loopback node "local" has been added
    And the worker for file:{model} on "local" is ready
    When the queen is sent SIGTERM
    Then the queen has exited
    And no worker process is left under the node's install path
    And no helper runs under the node's install path

  Scenario: A queen started with --keep-workers leaves them to the next queen
    Given the queen keeps its workers when it stops
    And the loopback node "local" has been added
    And the worker for file:{model} on "local" is ready
    When the queen is sent SIGTERM
    Then the queen has exited
    And the worker's process still runs
    When I run rbee-keeper workers list
    Then it succeeds
    And the worker is listed again under the same id and pid
    And the worker is idle again and serves the next request

  Scenario: A worker left idle is stopped after the idle time
    Given the queen stops a worker idle for 2 seconds, checking every 0.5 s
    And the loopback node "local" has been added
    And the worker for file:{model} on "local" is ready
    Then within 20 seconds no worker is listed
    And the worker's history says it was stopped for being idle
