"""Evaluate a detector or a results file: COCO mAP (pycocotools protocol) or Pascal VOC AP.

Examples::

    python eval.py checkpoint=outputs/synthetic/<run>/best.pt
    python eval.py checkpoint=best.pt dataset=voc0712 dataset.root=/data/VOCdevkit metric=voc07
    python eval.py dataset=coco dataset.ann_file=instances_val2017.json detections=results.json
"""

from detector.cli import eval_main

if __name__ == "__main__":
    eval_main()
