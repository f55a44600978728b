Feature: Failures a client does not pay for, and a stop that always ends
  A worker lost before a request's first token reached the client (killed,
  or its link cut) costs the client nothing: the queen sends the request once
  to another worker of the model. A queen stopped while a worker hangs is gone
  within 30 s, and every worker with it.

  From the original's area 210, kept: F7 (SIGTERM drains, then exits; here
  bounded at 30 s with a frozen worker). Covered elsewhere: F2 and F8 (a
  damaged database set aside and the newest backup restored, backups kept:
  the store's tests), F4 (a download resumed from its last byte: models
  feature), F6 (workers survive a queen restart: the lifecycle tests).
  Dropped: F1 (a heartbeat timeout of 120 s; workers send no heartbeats, the
  supervisor polls them and a failed or hung one is killed and restarted) and
  F5 (a "stale but busy" worker; without heartbeats there is no staleness, a
  worker with a stream in flight is judged by its tokens: the hung check).

  Background:
    Given the model "two" is served on the loopback nodes "a" and "b"
    And a worker of "two" is ready on each

  Scenario: A worker killed as it takes a request: the client still gets its answer
    When the worker on "a" freezes, a request for "two" reaches it, and it is killed
    Then the request ends with its tokens and no error
    And the worker on "b" served it

  Scenario: SIGTERM with a frozen worker: the queen and every worker gone within 30 s
    When one worker is frozen and I send the queen SIGTERM
    Then the queen is gone within 30 s and no worker process of it is left
    And its log counts 1 graceful stop and 1 forced
