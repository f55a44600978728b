@one_queen
Feature: Bad input is refused before anything runs
  Every field of every request is checked by the queen before it connects to a
  node or starts a worker. A refusal is 400 INVALID_REQUEST with one entry per
  bad field (its name and the rule it broke) in details.fields, a one-line
  message, and never the offending value quoted back.

  From the original's area 140, left out: "a port outside 1024-65535 stops the
  queen from starting" (the queen's port is a setting; area 360 covers bad
  settings), "more than 50 validation failures a second give 429" (rbee does not
  rate-limit by failures; connection and header limits answer 503 and 431
  instead, see 320) and "fuzzing causes no panic" (tests/test_fuzz_api.py sends
  arbitrary JSON bodies and headers to a real queen: a property test, not a
  scenario).

  Scenario: Every bad field is reported at once, not one per try
    When I POST /v2/tasks as the owner with {"node": "local", "model": "file:{model}", "prompt": "hi", "temperature": "hot", "max_tokens": -5, "top_p": 9}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists 3 fields
    And the error lists the field "temperature" as type
    And the error lists the field "max_tokens" as range
    And the error lists the field "top_p" as range

  Scenario Outline: A model reference with characters that are not allowed: <what>
    When I POST /v2/tasks as the owner with {"node": "local", "model": "<model>", "prompt": "hi"}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "model" as <constraint>
    And the error lists 1 fields

    Examples:
      | what                  | model                       | constraint |
      | a newline             | tiny\nx                     | characters |
      | an ANSI escape        | tiny\u001b[31m              | characters |
      | a NUL byte            | tiny\u0000x                 | characters |
      | a bidi override       | tiny\u202ex                 | characters |
      | a relative climb      | file:../../etc/passwd       | pattern    |
      | a climb in a path     | file:/a/../../etc/passwd    | pattern    |
      | a shell separator     | tiny; rm -rf /              | pattern    |
      | a backtick            | tiny`id`                    | pattern    |
      | a pipe                | tiny\|id                    | pattern    |
      | a non-ASCII letter    | café                        | pattern    |
      | markup                | <script>alert(1)</script>   | pattern    |

  Scenario Outline: Sampling settings out of range: <field> = <value>
    When I POST /v2/tasks as the owner with {"node": "local", "model": "file:{model}", "prompt": "hi", "<field>": <value>}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "<field>" as <constraint>

    Examples:
      | field              | value                | constraint |
      | max_tokens         | 0                    | range      |
      | max_tokens         | 2049                 | range      |
      | max_tokens         | "ten"                | type       |
      | temperature        | 2.5                  | range      |
      | top_p              | 1.5                  | range      |
      | min_p              | -0.1                 | range      |
      | top_k              | -1                   | range      |
      | repetition_penalty | 0                    | range      |
      | seed               | -1                   | range      |
      | seed               | 9223372036854775808  | range      |
      | stop               | ["a","b","c","d","e"] | max_items |
      | stop               | ""                   | length     |
      | stop               | 5                    | type       |

  Scenario Outline: A backend or device that cannot exist: <what>
    When I POST /v2/tasks as the owner with {"node": "local", "model": "file:{model}", "prompt": "hi", <fields>}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "<field>" as <constraint>

    Examples:
      | what                          | fields                              | field   | constraint |
      | a backend nobody has          | "backend": "quantum"                | backend | enum       |
      | metal, which rbee cannot run  | "backend": "metal"                  | backend | enum       |
      | a negative GPU                | "backend": "cuda", "device": -1     | device  | range      |

  Scenario Outline: A prompt that is empty or hides characters: <what>
    When I POST /v2/tasks as the owner with {"node": "local", "model": "file:{model}"<prompt>}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "prompt" as <constraint>

    Examples:
      | what            | prompt                 | constraint |
      | none at all     |                        | required   |
      | an empty one    | , "prompt": ""         | required   |
      | a NUL byte      | , "prompt": "a\u0000b" | characters |
      | a bidi override | , "prompt": "a\u202eb" | characters |

  Scenario Outline: Node names must be plain names: <name>
    When I POST /v2/tasks as the owner with {"node": "<name>", "model": "file:{model}", "prompt": "hi"}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "node" as <constraint>
    And the answer does not contain "<name>"

    Examples:
      | name                                                              | constraint |
      | work@station                                                      | pattern    |
      | x' OR '1'='1                                                      | pattern    |
      | aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa | max_length |
      | local\n                                                           | characters |
      | work\u001b[2Jstation                                              | characters |
      | gpu\u202e1                                                        | characters |

  Scenario Outline: A node name with a control or bidi character is refused, not echoed: <path>
    When I POST <path> as the owner with {"<field>": "<name>"}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "<field>" as characters
    And the answer does not contain "<name>"

    Examples:
      | path                          | field     | name            |
      | /v2/registry/beehives/remove  | node_name | local\n         |
      | /v2/registry/beehives/update  | node_name | n1\u001b[2J     |
      | /v2/registry/beehives/install | node_name | n1\r            |
      | /v2/registry/beehives/remove  | node_name | n\u202e1        |

  Scenario Outline: A body that is not a JSON object: <what>
    When I POST /v2/tasks as the owner with <body>
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error's message is one line without a traceback

    Examples:
      | what          | body      |
      | a list        | [1, 2]    |
      | not JSON      | {"node":  |
      | a bare string | "hello"   |

  Scenario Outline: JSON nested past the depth limit is 400, not a crash: <where> of <path>
    When I POST <path> as the owner, nesting arrays 1000 deep in <where>
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "body" as max_depth

    Examples:
      | path                         | where          |
      | /v2/tasks                    | the body       |
      | /v2/tasks                    | "prompt"       |
      | /v2/registry/beehives/add    | "install_path" |
      | /v2/keys/add                 | the body       |

  Scenario: JSON nested past the depth limit on /v1 is 400 in OpenAI's shape
    When I POST /v1/completions as the owner, nesting arrays 1000 deep in "prompt"
    Then the answer is HTTP 400
    And the answer's JSON has "error.type" set to "invalid_request_error"
    And the answer's JSON has "error.param" set to "body"

  Scenario Outline: A deadline with a digit that is not ASCII is 400 on <path>, before any token check
    When I GET <path> with no Authorization header, sending the latin-1 header "X-Request-Deadline: <deadline>"
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "X-Request-Deadline" as type

    Examples:
      | path              | deadline |
      | /health           | ²        |
      | /v2/workers/list  | ²        |
      | /v2/tasks         | 17¹²     |

  Scenario: A deadline with a digit that is not ASCII is 400 on /v1 in OpenAI's shape
    When I GET /v1/models with no Authorization header, sending the latin-1 header "X-Request-Deadline: ³"
    Then the answer is HTTP 400
    And the answer's JSON has "error.type" set to "invalid_request_error"
    And the answer's JSON has "error.param" set to "X-Request-Deadline"

  Scenario: A model name without a provider is looked up in the catalog
    # The original refused a reference without "provider:"; here a bare name is a
    # catalog name, so an unknown one is not found rather than malformed.
    When I POST /v2/tasks as the owner with {"node": "local", "model": "tinyllama", "prompt": "hi"}
    Then the answer is HTTP 404 with error MODEL_NOT_FOUND and a correlation id

  Scenario Outline: Worker ids are checked before any lookup: <what>
    When I POST /v2/workers/shutdown as the owner with {"worker_id": "<id>"}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "worker_id" as <constraint>

    Examples:
      | what              | id                      | constraint |
      | a shell command   | w; rm -rf /             | pattern    |
      | a backtick        | w`id`                   | pattern    |
      | a path            | ../../etc/passwd        | pattern    |

  Scenario Outline: Node settings are checked before anything connects: <field>
    When I POST /v2/registry/beehives/add as the owner with {"node_name": "n1", "ssh_host": "127.0.0.1", "ssh_user": "u", <fields>}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "<field>" as <constraint>
    And the error lists 1 fields

    Examples:
      | fields                          | field         | constraint |
      | "ssh_port": 70000               | ssh_port      | range      |
      | "ssh_port": 0                   | ssh_port      | range      |
      | "ssh_host": "h;id"              | ssh_host      | pattern    |
      | "ssh_user": "root;id"           | ssh_user      | pattern    |
      | "worker_access": "telnet"       | worker_access | enum       |
      | "model_source": "ftp"           | model_source  | enum       |
      | "install_path": "/tmp/a\nb"     | install_path  | characters |
      | "install_path": "/opt/rbee\u001b[2J" | install_path | characters |
      | "install_path": "/opt/rbee\r"   | install_path  | characters |
      | "install_path": "/opt/\u202erbee" | install_path | characters |
      | "ssh_key_path": "/k\u001b[2J"   | ssh_key_path  | characters |
      | "accept_new_host_key": "yes"    | accept_new_host_key | type |

  Scenario: A node name with dots is refused; names are plain identifiers
    # The original accepted DNS names such as workstation.home.arpa as node names;
    # rbee keeps a node's name (used in paths and log lines) to letters, digits,
    # "_" and "-", and the host itself goes in ssh_host.
    When I POST /v2/registry/beehives/add as the owner with {"node_name": "workstation.home.arpa", "ssh_host": "workstation.home.arpa", "ssh_user": "u"}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "node_name" as pattern
    And the error lists 1 fields

  Scenario Outline: Catalog entries are checked: <what>
    When I POST /v2/registry/models/add as the owner with {"name": "m", "model_ref": "<ref>", "nodes": <nodes>, "slots": <slots>}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "<field>" as <constraint>

    Examples:
      | what                 | ref           | nodes       | slots | field     | constraint |
      | an unknown scheme    | s3://bucket/m | ["local"]   | 1     | model_ref | pattern    |
      | no node to serve it  | file:/m       | []          | 1     | nodes     | required   |
      | too many slots       | file:/m       | ["local"]   | 65    | slots     | range      |
      | a node name with a ; | file:/m       | ["a;b"]     | 1     | nodes     | pattern    |

  Scenario Outline: The OpenAI routes check their own fields: <what>
    When I POST <route> as the owner with <body>
    Then the answer is HTTP 400
    And the answer's JSON has "error.type" set to "invalid_request_error"
    And the answer's JSON has "error.param" set to "<param>"

    Examples:
      | what                 | route                | body                                                              | param    |
      | more than one choice | /v1/completions      | {"model": "m", "prompt": "hi", "n": 2}                            | n        |
      | a role nobody has    | /v1/chat/completions | {"model": "m", "messages": [{"role": "wizard", "content": "hi"}]} | messages |
      | no messages          | /v1/chat/completions | {"model": "m", "messages": []}                                    | messages |

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
