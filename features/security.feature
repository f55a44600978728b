Feature: Secure by default
  The queen and every worker want a bearer token on every route but /health.
  On a laptop this needs no setup: the queen writes its token to a 0600 file
  under RBEE_HOME on first start and the keeper reads it from there.

  Scenario: The keeper works with no token configured by hand
    When I run rbee-keeper workers list
    Then it succeeds
    And the queen's token file has mode 0600

  Scenario: /health is public
    Given a local queen is running
    When I call GET /health without an Authorization header
    Then the answer is 200

  Scenario: A request without a token is refused
    Given a local queen is running
    When I call GET /v2/workers/list without an Authorization header
    Then the answer is 401 with error MISSING_API_KEY and a Bearer challenge

  Scenario Outline: Tokens that are almost right are refused
    Given a local queen is running
    When I call GET /v2/workers/list with the Authorization header "<header>"
    Then the answer is 401 with error INVALID_API_KEY and a Bearer challenge

    Examples:
      | header                 |
      | Bearer wrong-token     |
      | bearer {token}         |
      | Bearer  {token}        |
      | Bearer{token}          |

  Scenario: The right token is accepted
    Given a local queen is running
    When I call GET /v2/workers/list with the Authorization header "Bearer {token}"
    Then the answer is 200

  Scenario: A non-loopback bind without a token refuses to start
    When I start rbee-queen --host 0.0.0.0
    Then it exits with an error mentioning "API token required for non-loopback bind"

  Scenario: A secret file others can read is refused
    Given a secret file "token" with mode 0644 containing "a-long-enough-token-0123"
    When I start rbee-queen --token-file {home}/token
    Then it exits with an error mentioning "chmod 600"
    And the output does not contain "a-long-enough-token-0123"

  Scenario: The token comes from a systemd credential
    Given the queen runs with the systemd credential "credential-token-0123456789"
    When I call GET /v2/workers/list with the Authorization header "Bearer credential-token-0123456789"
    Then the answer is 200

  Scenario: SIGHUP rotates the token without a restart
    Given a local queen is running
    When I replace the queen's token with "rotated-token-0123456789" and send SIGHUP
    Then the old token is refused
    And a call with the Authorization header "Bearer rotated-token-0123456789" answers 200

  Scenario: A named key may run inference but not manage nodes
    Given a local queen is running
    When I run rbee-keeper keys add --name ci --token-out {home}/ci.token
    Then it succeeds
    When I run rbee-keeper --token-file {home}/ci.token setup remove-node --name gpu1
    Then it fails with exit code 1 and error FORBIDDEN
    When I run rbee-keeper keys revoke --name ci
    Then it succeeds
    When I run rbee-keeper --token-file {home}/ci.token workers list
    Then it fails with exit code 1 and error INVALID_API_KEY

  Scenario Outline: Injection attempts in names are rejected and nothing runs
    When I run rbee-keeper setup add-node --name '<name>' --ssh-host 127.0.0.1 --ssh-user u --ssh-key {key} --install-path /tmp/x
    Then it fails with exit code 1 and error INVALID_REQUEST
    And no file "{home}/canary" exists

    Examples:
      | name                         |
      | n1; touch {home}/canary      |
      | $(touch {home}/canary)       |
      | n1";DROP TABLE node;--        |
      | ../../etc/passwd             |

  Scenario: Tampering with the audit log is detected
    Given a local queen is running
    And the queen has audited a few requests
    When I run rbee-keeper audit verify
    Then it succeeds
    When I edit entry 2 of the audit log
    And I run rbee-keeper audit verify
    Then it fails with exit code 1 and error AUDIT_CHAIN_BROKEN
    And the error mentions "line 2"
