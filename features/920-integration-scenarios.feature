@testbed
Feature: A fleet of several nodes
  Each test host is its own machine as far as rbee can tell: a network
  namespace with its own address, hostname, user and sshd. Every node is
  reported on its own, and one that drops off never hides the others.
  (Needs root to make the hosts; skipped with the reason otherwise.)

  Scenario: Import an inventory of three hosts and see them all
    Given 3 test hosts
    When I import an inventory naming them
    Then it succeeds
    And the output mentions "added    h2"
    And nodes status shows every test host reachable on its own hostname

  Scenario: A host whose link is cut is unreachable; the others are fine
    Given 3 test hosts
    When I import an inventory naming them
    And I cut the link of test host 1
    Then nodes status shows test host 1 unreachable and the others reachable
