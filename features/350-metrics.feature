@one_node
Feature: 350 Metrics and observability: what Prometheus reads from the queen
  The original's area 350. One queen and its loopback node "local" for the
  feature; each scenario compares the queen's /metrics before and after what
  it does. deploy/prometheus and deploy/grafana are checked by a real
  Prometheus in tests/test_monitoring_prometheus.py.

  Not carried over, and why:
  - the original's names (pool_mgr_workers_total, pool_mgr_errors_total
    {error_kind}, ...): rbee's follow Prometheus' conventions (rbee_ prefix,
    units in the name, _total for counters); docs/monitoring.md maps them.
  - model_download_progress_percent{model}: a download's progress is in its
    own event stream (models download); Prometheus gets each transfer's bytes,
    duration and outcome once it ends.
  - narration with a "cute" field and [REDACTED] secrets: rbee has no
    narration; no metric carries a secret, a prompt or a request id.

  Scenario: Every figure follows Prometheus' naming and carries bounded labels
    When I run a task on "local" with the prompt "zebra-7431 sings"
    Then every counter of the queen's metrics ends in _total
    And every duration of the queen's metrics is in seconds
    And the queen's metrics hold neither the prompt nor the job's id

  Scenario: A request is timed by route and by model
    Given I note the queen's metrics
    When I run a task on "local" with the prompt "Once upon a time"
    Then the metric rbee_inference_duration_seconds_count for model file:{model} went up by 1
    And the metric rbee_http_request_duration_seconds_count for route /v2/tasks, method POST, status 2xx went up by 1
    And the metric rbee_time_to_first_token_seconds_count for model file:{model} went up by 1
    And the metric rbee_requests_in_flight is 0

  Scenario: Errors are counted by their code
    Given I note the queen's metrics
    When I GET /v2/workers/w-nowhere/events as the owner
    Then the answer is HTTP 404
    And the metric rbee_errors_total for code WORKER_NOT_FOUND, source api went up by 1
    And the metric rbee_http_request_duration_seconds_count for route /v2/workers/{worker_id}/events, method GET, status 4xx went up by 1

  Scenario: A node's reachability and its SSH connects, per node
    Given I note the queen's metrics
    When I try to add a node "nowhere" whose SSH port is closed
    Then the metric rbee_node_up for node local is 1
    And the metric rbee_ssh_connects_total for node nowhere went up by 1
    And the metric rbee_ssh_connect_failures_total for node nowhere, code NODE_UNREACHABLE went up by 1
    And the metric rbee_health_round_duration_seconds_count is above 0

  Scenario: A worker's stop is counted with its reason, outcome and duration
    Given the worker for file:{model} on "local" is ready
    And I note the queen's metrics
    When I shut that worker down
    Then it succeeds
    And the metric rbee_worker_stops_total for reason requested went up by 1
    And the metric rbee_worker_shutdown_duration_seconds_count for outcome graceful went up by 1
    And the metric rbee_workers for state stopped went up by 1
