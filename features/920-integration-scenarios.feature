@testbed
Feature: A fleet of several nodes
  Each test host is its own machine as far as rbee can tell: a network
  namespace with its own address, hostname, user and sshd. Every node is
  reported on its own, and one that drops off never hides the others.
  (Needs root to make the hosts; skipped with the reason otherwise.)

  From the original's area 920, kept: several nodes at once, and a network
  partition (a link cut) seen per node. Elsewhere: worker churn and restarts
  (110, 120), de-duplicated concurrent downloads (030), OOM while loading (090
  says why it is not provoked), database corruption (020/330). Left out: the
  fixed ports of its docker-compose environment (queen 8080, hive 9200, worker
  8081): every port here is chosen free at run time.

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
