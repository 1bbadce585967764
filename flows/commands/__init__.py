"""Extra `medaudit` sub-commands: each module here defines ``register(subparsers)``.

Adding a command is one new module; flows/cli.py discovers them.
"""
