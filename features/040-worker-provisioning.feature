@one_node
Feature: Getting a worker environment onto a node
  A node runs its workers with the python named by --worker-python, or with
  the venv that `setup install` builds at <install_path>/venv from the queen's
  own wheel (pip on the node; --no-deps where the node's python already has
  torch). A failed install names its step and leaves the node as it was.

  From the original's area 040, changed: the original compiled a Rust binary
  with cargo on the node ("a compilation error shows cargo's stderr", "a
  missing CUDA toolkit gives a link error"); rbee ships Python, so there is
  nothing to compile, and the GPU stack is checked by the worker at load
  (BACKEND_UNAVAILABLE, area 090). A whole install (venv, pip, a worker from
  it) takes tens of seconds and is tests/test_install.py's.

  Scenario: An install on a node that does not exist
    When I run rbee-keeper setup install --node ghost --no-deps
    Then it fails with exit code 1 and error NODE_NOT_FOUND

  Scenario: An install from a python the node does not have names the step
    When I run rbee-keeper setup install --node local --python /no/such/python3 --no-deps
    Then it fails with exit code 1 and error INSTALL_FAILED
    And the error mentions "python"
    And the node "local" still runs its workers with the python it had

  Scenario: A worker python that is not there fails the worker's start, with why
    Given the loopback node "nopy" uses the worker python "/no/such/python3"
    When I run rbee-keeper infer --node nopy --model file:{model} --prompt "hi"
    Then it fails with exit code 1 and error HELPER_FAILED
    And the error mentions "cannot start /no/such/python3"
    And no worker process is left for "{model}"
