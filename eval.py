"""Evaluate a checkpoint: ``python eval.py ckpt_path=... data=helen`` (see conf/eval.yaml)."""

from portraitseg.cli.eval import main

if __name__ == "__main__":
    main()
