"""``python -m nino_optim.bench ARGS`` = ``nino-optim bench ARGS``; ``python -m nino_optim.bench report ARGS`` =
``nino-optim report ARGS``."""
import sys

from ..cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    main(argv if argv[:1] == ["report"] else ["bench", *argv])
