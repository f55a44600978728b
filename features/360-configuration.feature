Feature: Configuration a person can read, check and reload
  The queen reads RBEE_HOME/queen.toml (or --config, or RBEE_CONFIG) under the
  environment and the flags; every setting is checked at start, every problem
  listed at once; a SIGHUP applies what may change on a running queen.

  From the original's area 360, dropped: /etc/rbee/pool-managerd.toml with its
  [pool] max_workers and heartbeat_interval_ms (there is no pool manager here:
  the queen reaches nodes over SSH, and its settings are in queen.toml), and
  "a missing server.host exits 1" (every setting has a default; a bad value
  exits 2, argparse's status for bad usage). The environment overriding the
  file, schema errors, SIGHUP and redaction are kept below.

  Scenario: A file with mistakes refuses to start and lists every one
    Given the queen's settings file says:
      """
      [restart]
      max_attempts = "three"
      [helth]
      interval_s = 1
      """
    When I start rbee-queen with the settings file
    Then it exits 2 and lists 2 problems
    And the problems include "restart.max_attempts = 'three' (from file): expected an integer in 0..100"
    And the problems include "unknown section [helth] (did you mean 'health'?)"
    And nothing but the settings file is in RBEE_HOME

  Scenario: The environment overrides the file, and a flag the environment
    Given the queen's settings file says:
      """
      [restart]
      max_attempts = 4
      [supervisor]
      interval_s = 12
      """
    And the environment sets RBEE_RESTART_MAX_ATTEMPTS to 6
    When I check the queen's settings with --log-level debug
    Then the setting restart.max_attempts is 6 from environment RBEE_RESTART_MAX_ATTEMPTS
    And the setting supervisor.interval_s is 12.0 from file
    And the setting server.log_level is "debug" from flag
    And the setting health.interval_s is 5.0 from default

  Scenario: A SIGHUP applies a reloadable setting to the running queen
    Given a local queen is running
    When the queen's settings file says:
      """
      [health]
      interval_s = 2
      """
    And I send the queen SIGHUP
    Then the queen's GET /v2/admin/config shows health.interval_s 2.0 from file
    And the queen's audit log records config.reloaded

  Scenario: A bad file on SIGHUP changes nothing
    Given a local queen is running
    When the queen's settings file says:
      """
      [health]
      interval_s = -3
      """
    And I send the queen SIGHUP
    Then the queen's audit log records config.reload_failed
    And the queen's GET /v2/admin/config shows health.interval_s 5.0 from default
