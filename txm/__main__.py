"""``python -m txm`` runs the same command line as ``txm``."""

from txm.cli import cli

if __name__ == "__main__":
    cli(prog_name="txm")
