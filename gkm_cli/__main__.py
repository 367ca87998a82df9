"""`python -m gkm_cli` (also what torchrun runs)."""

from gkm_cli.cli import main

if __name__ == "__main__":
    main()
