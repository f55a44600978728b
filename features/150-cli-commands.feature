Feature: The keeper's command line
  rbee-keeper is the one command a user types. It checks what it can before
  calling the queen, says what is wrong in one line, and exits 0 on success, 1
  on a failure, 2 on bad usage. Its settings come from a flag, then the
  environment, then keeper.toml, then the default. (Most scenarios here need no
  queen: the keeper refuses before it would start one.)

  From the original's area 150, left out: "install goes to ~/.local/bin, or to
  /usr/local/bin with --system" (rbee is a Python package installed with pip;
  nothing is copied by the keeper) and "[remote] binary_path and git_repo_dir"
  (nodes run the helper the queen uploads and the worker from the node's
  python or the venv `setup install` builds, area 040), and "logs --follow
  exits 0 or 130" (it runs until interrupted; `logs` itself is area 060's).

  Scenario: A missing key file fails before any call to the queen
    When I run rbee-keeper setup add-node --name gpu1 --ssh-host 127.0.0.1 --ssh-user x --ssh-key {home}/no-such-key --install-path /tmp/x
    Then it fails with exit code 1 and error SSH_KEY_NOT_FOUND
    And no queen was started

  Scenario Outline: A command without what it needs prints its usage: <command>
    When I run rbee-keeper <command>
    Then it fails with a usage message naming "<missing>"
    And no queen was started

    Examples:
      | command                                   | missing         |
      | infer --prompt hi                         | --model         |
      | setup add-node --name gpu1                | --ssh-host      |
      | setup remove-node                         | --name          |
      | workers shutdown                          | --id            |
      | logs                                      | --node          |
      | models download --node gpu1               | REF             |
      | keys add --name ci                        | --token-out     |
      | infer --model m --prompt p --backend metal | --backend      |
      | infer --model m --prompt p --max-tokens x | --max-tokens    |
      | setup add-node --name n --ssh-host h --install-path /x --ssh-port abc | --ssh-port |
      | --queen-url not-a-url workers list        | --queen-url     |
      | frobnicate                                | COMMAND         |

  Scenario: --help lists every command
    When I run rbee-keeper --help
    Then it succeeds
    And the output lists the commands setup, nodes, infer, workers, models, logs, keys and audit
    And no queen was started

  Scenario: The queen's address comes from keeper.toml when nothing else names it
    Given keeper.toml says queen_url = "http://from-the-file.invalid:8080"
    And RBEE_QUEEN_URL is not set
    When I run rbee-keeper workers list
    Then it fails with exit code 1 and error QUEEN_UNAVAILABLE
    And the error mentions "from-the-file.invalid"

  Scenario: The environment overrides keeper.toml, and a flag the environment
    Given keeper.toml says queen_url = "http://from-the-file.invalid:8080"
    And RBEE_QUEEN_URL is "http://from-the-environment.invalid:8080"
    When I run rbee-keeper workers list
    Then it fails with exit code 1 and error QUEEN_UNAVAILABLE
    And the error mentions "from-the-environment.invalid"
    When I run rbee-keeper --queen-url http://from-the-flag.invalid:8080 workers list
    Then it fails with exit code 1 and error QUEEN_UNAVAILABLE
    And the error mentions "from-the-flag.invalid"

  Scenario: A keeper.toml with a mistake says which key, and what was meant
    Given keeper.toml says outptu = "json"
    When I run rbee-keeper workers list
    Then it fails with exit code 1 and error CONFIG_INVALID
    And the error mentions "did you mean 'output'?"
    And no queen was started

  Scenario: The keeper starts a local queen when none answers, and lists no workers
    When I run rbee-keeper workers list
    Then it succeeds
    And the keeper said "started local queen"
    And the keeper said "no workers running"
    When I run rbee-keeper --json workers list
    Then it succeeds
    And the output is the JSON {"workers": []}

  Scenario: RBEE_OUTPUT=json makes JSON the default
    Given RBEE_OUTPUT is "json"
    When I run rbee-keeper setup list-nodes
    Then it succeeds
    And the output is the JSON {"nodes": []}
