"""`python -m ktproxy` is the `kt` CLI."""

from ktproxy.cli import main

if __name__ == "__main__":
    main()
