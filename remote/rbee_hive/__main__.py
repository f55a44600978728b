"""Entry point: `python3 -m rbee_hive` serves JSON-lines RPC on stdin/stdout."""

from rbee_hive.rpc import serve

if __name__ == "__main__":
    serve()
