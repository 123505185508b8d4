from sona.cli import main

# Guarded: the engine process is spawned, and a spawned child imports __main__.
if __name__ == "__main__":
    raise SystemExit(main())
