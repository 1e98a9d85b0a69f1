"""Train a segmenter: ``python train.py model=fcn_resnet50 data=helen`` (see conf/train.yaml)."""

from portraitseg.cli.train import main

if __name__ == "__main__":
    main()
