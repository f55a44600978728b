@one_queen
Feature: Checks before a node is recorded
  add-node runs named checks in order before it writes anything: key, connect,
  host_key, authenticate, run (the helper starts), latency, python (3.10+),
  install_path (writable) and disk (2 GiB free). The answer lists each with its
  result; a failure names its check and says what to try.

  From the original's area 070, changed: "latency under 100 ms" is recorded,
  not enforced (a node across an ocean is still a node), and "which rbee-hive
  resolves" is the helper starting from its uploaded folder (there is nothing
  installed to find). An SSH connect timeout (CONNECTION_TIMEOUT) is left to
  tests/test_nodes_api.py, which shortens the timeout for one queen.

  Scenario: Every check passes, in order, and the answer lists them
    When I run rbee-keeper --json setup add-node --name pf-ok --ssh-host 127.0.0.1 --ssh-port {port} --ssh-user {user} --ssh-key {key} --install-path {install} --worker-python {python} --accept-new-host-key
    Then it succeeds
    And the preflight checks were key, connect, host_key, authenticate, run, latency, python, install_path, disk, all passed

  Scenario: An install path nobody can write is refused by its check
    # The helper is uploaded under the install path, so a path that cannot be
    # written fails while the helper is put there, as the install_path check
    # (PREFLIGHT_FAILED, like the python and disk checks).
    When I POST /v2/registry/beehives/add as the owner with {"node_name": "pf-ro", "ssh_host": "127.0.0.1", "ssh_port": {port}, "ssh_user": "{user}", "ssh_key_path": "{key}", "install_path": "/proc/rbee", "accept_new_host_key": true}
    Then the answer is HTTP 502 with error PREFLIGHT_FAILED and a correlation id
    And the error names the check "install_path" and a suggestion
    And the node list has no "pf-ro"

  Scenario: A key the node refuses fails the authenticate check
    Given a fresh SSH key "pf-stranger" the node has never seen
    When I POST /v2/registry/beehives/add as the owner with {"node_name": "pf-auth", "ssh_host": "127.0.0.1", "ssh_port": {port}, "ssh_user": "{user}", "ssh_key_path": "{home}/pf-stranger", "install_path": "{install}", "accept_new_host_key": true}
    Then the answer is HTTP 502 with error SSH_AUTH_FAILED and a correlation id
    And the error names the check "authenticate" and a suggestion

  Scenario: A port nobody listens on fails the connect check
    When I POST /v2/registry/beehives/add as the owner with {"node_name": "pf-port", "ssh_host": "127.0.0.1", "ssh_port": {free_port}, "ssh_user": "{user}", "ssh_key_path": "{key}", "install_path": "{install}", "accept_new_host_key": true}
    Then the answer is HTTP 502 with error NODE_UNREACHABLE and a correlation id
    And the error names the check "connect" and a suggestion

  Scenario: A missing key file fails the first check, before any connection
    When I POST /v2/registry/beehives/add as the owner with {"node_name": "pf-nokey", "ssh_host": "127.0.0.1", "ssh_port": {port}, "ssh_user": "{user}", "ssh_key_path": "{home}/absent-key", "install_path": "{install}"}
    Then the answer is HTTP 400 with error SSH_KEY_NOT_FOUND and a correlation id

  Scenario: The keeper's one line says which check failed and what to try
    When I run rbee-keeper setup add-node --name pf-ro2 --ssh-host 127.0.0.1 --ssh-port {port} --ssh-user {user} --ssh-key {key} --install-path /proc/rbee --accept-new-host-key
    Then it fails with exit code 1 and error PREFLIGHT_FAILED
    And the error mentions "preflight install_path"
    And the error mentions "try:"
