"""Train a MobileNet-SSD detector: ``python train.py [group=option ...] [key=value ...]``.

Examples::

    python train.py                                   # synthetic dataset, small model, ~10 min CPU
    python train.py backbone.alpha=0.5 image_size=[300,300]
    python train.py experiment=voc_ssd300 dataset.root=/data/VOCdevkit
    python train.py resume=outputs/synthetic/<run>/last.pt
    torchrun --nproc_per_node=2 train.py device=cpu
"""

from detector.cli import train_main

if __name__ == "__main__":
    train_main()
