Feature: 330 Audit logging: a tamper-evident record that never holds up a request
  The original's area 330, with detection of an edited entry (the last scenario).

  Not carried over, and why:
  - the original's event names (worker.spawn, auth.success, inference.start,
    ...): rbee names its own; each entry has a time, an event and a hash.
  - disk thresholds "warn at 95 MB, critical at 99 MB" of a fixed-size log:
    rbee warns when the audit folder's disk has less free space than a
    setting (RBEE_AUDIT_MIN_FREE_MB) and never refuses a request for it.

  Scenario: Rotation and restarts keep one verifiable chain
    Given the queen rotates its audit file past 0.01 MiB
    And a local queen is running
    When I make 60 requests
    And the queen restarts
    And I make 10 requests
    Then the audit log is in more than one file
    And its entries number on from before the restart
    And every entry has a time, an event and a hash
    And no audit file holds the owner's token
    When I run rbee-keeper audit verify
    Then it succeeds

  Scenario: A low audit disk is a warning, not a refusal
    Given the queen warns when its audit disk has less than 100000000 MiB free
    And a local queen is running
    When I run rbee-keeper nodes status
    Then it succeeds
    And the error mentions "audit log's disk"

  Scenario: Every request is audited, and tampering with the log is detected
    Given a local queen is running
    And the queen has audited a few requests
    When I run rbee-keeper audit verify
    Then it succeeds
    When I edit entry 2 of the audit log
    And I run rbee-keeper audit verify
    Then it fails with exit code 1 and error AUDIT_CHAIN_BROKEN
    And the error mentions "line 2"
