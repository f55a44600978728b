Feature: Secrets that stay secret
  The queen's token lives in a file only its owner can read: made on first
  start (mode 0600) or given with --token-file, $RBEE_API_TOKEN_FILE or a
  systemd credential. A file others could read, or one that is empty, missing
  or more than one line, stops the queen at start with one line saying why, and
  never the secret itself. SIGHUP reads the token again without a restart.

  From the original's area 310, left out: "secrets are zeroized in memory"
  (Python strings cannot be wiped; the queen keeps only the SHA-256 of named
  keys and holds the owner's token in one object) and "HKDF-SHA256 key
  derivation with the salt llama-orch-encryption-v1" (rbee encrypts nothing
  at rest: the audit log's MAC key is a random file of its own, see area 330).
  "An unreadable file" is not a scenario because the tests run as root, who
  reads any file.

  Scenario: The keeper works with no token configured by hand
    When I run rbee-keeper workers list
    Then it succeeds
    And the queen's token file has mode 0600
    And the queen's command line holds no token

  Scenario Outline: A token file with mode <mode> is refused
    Given a secret file "token" with mode <mode> containing "a-long-enough-token-0123"
    When I start rbee-queen --token-file {home}/token
    Then it exits with an error mentioning "chmod 600"
    And the output does not contain "a-long-enough-token-0123"

    Examples:
      | mode |
      | 0644 |
      | 0640 |
      | 0604 |
      | 0660 |

  Scenario Outline: A token file that is <what> is refused
    Given a secret file "token" with mode 0600 containing "<content>"
    When I start rbee-queen --token-file {home}/token
    Then it exits with an error mentioning "<message>"

    Examples:
      | what              | content                          | message             |
      | empty             |                                  | is empty            |
      | only spaces       | \x20\x20\x20                     | is empty            |
      | two lines         | first-line-0123\nsecond-line-456 | more than one line  |

  Scenario: A token file that does not exist is refused
    When I start rbee-queen --token-file {home}/no-such-token
    Then it exits with an error mentioning "does not exist"

  Scenario Outline: A token file with mode <mode> is used, its final newline dropped
    Given a secret file "token" with mode <mode> containing "owner-token-from-a-file-0123"
    And the queen is started by hand with --token-file {home}/token
    Then a call with the Authorization header "Bearer owner-token-from-a-file-0123" answers 200

    Examples:
      | mode |
      | 0600 |
      | 0400 |

  Scenario: The token comes from a systemd credential
    Given the queen runs with the systemd credential "credential-token-0123456789"
    When I call GET /v2/workers/list with the Authorization header "Bearer credential-token-0123456789"
    Then the answer is 200

  Scenario: SIGHUP rotates the token without a restart
    Given a local queen is running
    When I replace the queen's token with "rotated-token-0123456789" and send SIGHUP
    Then the old token is refused
    And a call with the Authorization header "Bearer rotated-token-0123456789" answers 200

  Scenario: A non-loopback bind without a token refuses to start
    When I start rbee-queen --host 0.0.0.0
    Then it exits with an error mentioning "API token required for non-loopback bind"
