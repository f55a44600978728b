"""Every setting of the queen, defined once.

Each `Setting` names its place in `queen.toml` (section and key), the
`QueenConfig` field it fills, its environment variable and command-line flag
(if any), its type, default, allowed range, whether a reload may change it on
a running queen, and one line for people. The defaults, the validation,
`docs/configuration.md` and `queen.example.toml` all come from this list.
"""

from __future__ import annotations

from dataclasses import dataclass

SettingValue = str | int | float | bool | None

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    field: str  # the QueenConfig attribute
    kind: type  # str, int, float, bool, or "path" as str with is_path
    default: SettingValue
    description: str
    env: str | None = None
    flag: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    reloadable: bool = False
    is_path: bool = False
    secret: bool = False  # its value is printed as "<redacted>"
    secret_file: bool = False  # the file it names holds a secret: mode 0600

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"

    def allowed(self) -> str:
        """What a valid value looks like, for error messages and the docs."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        if self.is_path:
            return "a path" + (" (empty: the default)" if self.default is None else "")
        name = "an integer" if self.kind is int else "a number" if self.kind is float else "text"
        if self.minimum is not None and self.maximum is not None:
            return f"{name} in {self.minimum:g}..{self.maximum:g}"
        if self.minimum is not None:
            return f"{name} >= {self.minimum:g}"
        return name


def _s(
    section: str, key: str, field: str, kind: type, default: SettingValue, doc: str, **kw: object
) -> Setting:
    return Setting(section, key, field, kind, default, doc, **kw)  # type: ignore[arg-type]


SETTINGS: tuple[Setting, ...] = (
    # [server]
    _s(
        "server",
        "host",
        "host",
        str,
        "127.0.0.1",
        "address the API binds (loopback unless you mean otherwise)",
        env="RBEE_QUEEN_HOST",
        flag="--host",
    ),
    _s(
        "server",
        "port",
        "port",
        int,
        8080,
        "TCP port of the API (below 1024 only with server.allow_low_port)",
        env="RBEE_QUEEN_PORT",
        flag="--port",
        minimum=1,
        maximum=65535,
    ),
    _s(
        "server",
        "allow_low_port",
        "allow_low_port",
        bool,
        False,
        "allow a port below 1024",
        env="RBEE_QUEEN_ALLOW_LOW_PORT",
    ),
    _s(
        "server",
        "log_level",
        "log_level",
        str,
        "info",
        "how much the queen logs",
        env="RBEE_LOG_LEVEL",
        flag="--log-level",
        choices=LOG_LEVELS,
        reloadable=True,
    ),
    _s(
        "server",
        "control_timeout_s",
        "control_timeout_s",
        float,
        30.0,
        "deadline of a control request (not inference) in seconds",
        env="RBEE_CONTROL_TIMEOUT",
        minimum=0.1,
        maximum=3600,
    ),
    _s(
        "server",
        "stop_workers_on_exit",
        "stop_workers_on_exit",
        bool,
        True,
        "stop every worker when the queen stops (--keep-workers sets false)",
        env="RBEE_STOP_WORKERS_ON_EXIT",
        flag="--keep-workers",
        reloadable=True,
    ),
    _s(
        "server",
        "check_messages",
        "check_messages",
        bool,
        False,
        "check every cross-process message against rbee_wire (for test runs)",
        env="RBEE_CHECK_MESSAGES",
    ),
    # [paths]
    _s(
        "paths",
        "database",
        "database",
        str,
        None,
        "the SQLite file (default: RBEE_HOME/queen.db)",
        env="RBEE_DATABASE",
        is_path=True,
    ),
    _s(
        "paths",
        "audit_dir",
        "audit_path",
        str,
        None,
        "folder of the audit log (default: RBEE_HOME/audit)",
        env="RBEE_AUDIT_DIR",
        is_path=True,
    ),
    _s(
        "paths",
        "token_file",
        "token_file",
        str,
        None,
        "the owner's API token, mode 0600 (default: see docs/security.md)",
        flag="--token-file",
        is_path=True,
        secret_file=True,
        reloadable=True,
    ),
    _s(
        "paths",
        "hf_token_file",
        "hf_token_file",
        str,
        None,
        "a Hugging Face token, mode 0600 (default: RBEE_HOME/hf-token)",
        env="RBEE_HF_TOKEN_FILE",
        is_path=True,
        secret_file=True,
    ),
    # [audit]
    _s(
        "audit",
        "max_file_mb",
        "audit_max_file_mb",
        float,
        10.0,
        "an audit file is rotated past this size in MiB",
        env="RBEE_AUDIT_MAX_FILE_MB",
        minimum=0.01,
        maximum=10240,
    ),
    # [ssh]
    _s(
        "ssh",
        "connect_timeout_s",
        "ssh_connect_timeout_s",
        float,
        10.0,
        "seconds an SSH connect may take",
        env="RBEE_SSH_CONNECT_TIMEOUT",
        minimum=0.1,
        maximum=600,
    ),
    _s(
        "ssh",
        "reconnect_max_s",
        "reconnect_max_s",
        float,
        10.0,
        "cap of the backoff between reconnects to a failing node",
        env="RBEE_RECONNECT_MAX",
        minimum=0,
        maximum=3600,
    ),
    # [health]
    _s(
        "health",
        "interval_s",
        "health_interval_s",
        float,
        5.0,
        "seconds between node health rounds (0: no health loop)",
        env="RBEE_HEALTH_INTERVAL",
        minimum=0,
        maximum=3600,
        reloadable=True,
    ),
    _s(
        "health",
        "gpu_interval_s",
        "gpu_interval_s",
        float,
        15.0,
        "seconds between GPU readings (a probe instead of a ping)",
        env="RBEE_GPU_INTERVAL",
        minimum=0.1,
        maximum=3600,
        reloadable=True,
    ),
    _s(
        "health",
        "gpu_max_temp_c",
        "gpu_max_temp_c",
        float,
        85.0,
        "no worker starts on a GPU hotter than this, in Celsius",
        env="RBEE_GPU_MAX_TEMP",
        minimum=30,
        maximum=120,
    ),
    # [workers]
    _s(
        "workers",
        "loading_timeout_s",
        "worker_loading_timeout_s",
        float,
        120.0,
        "seconds a worker may take to load its model",
        env="RBEE_WORKER_LOADING_TIMEOUT",
        minimum=1,
        maximum=86400,
    ),
    _s(
        "workers",
        "stop_grace_s",
        "worker_stop_grace_s",
        float,
        10.0,
        "seconds a stopping worker's streams get, then SIGTERM, then SIGKILL",
        env="RBEE_WORKER_STOP_GRACE",
        minimum=0,
        maximum=3600,
    ),
    _s(
        "workers",
        "idle_stop_s",
        "idle_stop_s",
        float,
        300.0,
        "an idle worker is stopped after this many seconds (0: never)",
        env="RBEE_IDLE_STOP",
        minimum=0,
        reloadable=True,
    ),
    # [supervisor]
    _s(
        "supervisor",
        "interval_s",
        "supervisor_interval_s",
        float,
        30.0,
        "seconds between worker checks (0: no supervisor)",
        env="RBEE_SUPERVISOR_INTERVAL",
        minimum=0,
        maximum=3600,
        reloadable=True,
    ),
    _s(
        "supervisor",
        "health_timeout_s",
        "worker_health_timeout_s",
        float,
        5.0,
        "seconds a worker's /health may take",
        env="RBEE_WORKER_HEALTH_TIMEOUT",
        minimum=0.1,
        maximum=600,
        reloadable=True,
    ),
    _s(
        "supervisor",
        "hung_after_s",
        "hung_after_s",
        float,
        60.0,
        "a request in flight with no token for this long makes its worker hung",
        env="RBEE_HUNG_AFTER",
        minimum=0.1,
        reloadable=True,
    ),
    # [restart]
    _s(
        "restart",
        "max_attempts",
        "restart_max_attempts",
        int,
        3,
        "restarts in a row before rbee gives up on a worker",
        env="RBEE_RESTART_MAX_ATTEMPTS",
        minimum=0,
        maximum=100,
        reloadable=True,
    ),
    _s(
        "restart",
        "base_delay_s",
        "restart_base_delay_s",
        float,
        1.0,
        "the first restart's delay; each next one doubles (with +-20 % jitter)",
        env="RBEE_RESTART_BASE_DELAY",
        minimum=0,
        maximum=3600,
        reloadable=True,
    ),
    _s(
        "restart",
        "max_delay_s",
        "restart_max_delay_s",
        float,
        60.0,
        "the cap on a restart's delay",
        env="RBEE_RESTART_MAX_DELAY",
        minimum=0,
        maximum=86400,
        reloadable=True,
    ),
    _s(
        "restart",
        "breaker_failures",
        "breaker_failures",
        int,
        5,
        "failures of one model on one node that open its circuit",
        env="RBEE_BREAKER_FAILURES",
        minimum=1,
        maximum=1000,
        reloadable=True,
    ),
    _s(
        "restart",
        "breaker_window_s",
        "breaker_window_s",
        float,
        300.0,
        "the window those failures are counted in",
        env="RBEE_BREAKER_WINDOW",
        minimum=1,
        reloadable=True,
    ),
    _s(
        "restart",
        "reset_after_s",
        "restart_reset_after_s",
        float,
        300.0,
        "stable uptime that resets the counts",
        env="RBEE_RESTART_RESET_AFTER",
        minimum=1,
        reloadable=True,
    ),
)

BY_PATH: dict[str, Setting] = {s.path: s for s in SETTINGS}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SETTINGS))
