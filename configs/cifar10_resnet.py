"""CIFAR-10 with a CIFAR-style ResNet (ResNet-20 by default; ResNet-8 as in Shallue et al.).

Needs a prepared TFDS copy in array_record format:
  tfds build cifar10 --data_dir=$HOME/tensorflow_datasets --file_format=array_record

Launch:
  python -m lrscale.train --config=configs/cifar10_resnet.py --workdir=runs/cifar10_r20 \
      --config.dataset.data_dir=$HOME/tensorflow_datasets
ResNet-8, Shallue et al.'s target (val error < 0.30):
  python -m lrscale.train --config=configs/cifar10_resnet.py:resnet8 --workdir=runs/cifar10_r8

Input: He et al. 2016's augmentation (sec. 4.2): zero-pad 4 pixels, random 32x32 crop, random
horizontal flip, a pure function of (seed, epoch, index) (lrscale.data.augment), computed in
grain workers; so the training set streams (config.dataset.stream) and batches travel as uint8,
scaled to [0, 1] on the device (no per-channel standardisation; the ResNet's BatchNorm follows).
The full test split is evaluated at every evaluation (lrscale.engine.evaluate).
Offline, on the synthetic ImageNet stand-in (variable-size images, resized to 32 after the crop):
  python -m lrscale.data.synthetic_imagenet --data_dir=/tmp/synth
  python -m lrscale.train --config=configs/cifar10_resnet.py --workdir=runs/cifar_synth \
      --config.dataset.name=lrscale_synthetic_imagenet --config.dataset.data_dir=/tmp/synth \
      --config.dataset.image_size=32 --config.dataset.eval_split=validation \
      --config.budget="20 steps" --config.allow_truncated_schedule=True
"""

from lrscale.config import base_config


def get_config(arg: str = "resnet20"):
  c = base_config()
  c.dataset.name = "cifar10"
  c.dataset.stream = True  # augmentation runs in the streamed pipeline's workers
  c.dataset.augment = "cifar_crop_flip"  # pad 4, random crop, flip (He et al. 2016)
  c.model.name = arg  # resnet8 | resnet20
  c.model.bn_group_size = 32  # ghost BN: independent of device count
  c.batch_size = 128
  c.lr = 0.1  # He et al. 2016: 0.1 at batch 128
  c.scaling.rule = "linear"
  c.scaling.reference_batch = 128
  c.optimizer.name = "momentum"
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4  # not on BN or biases (decay_mask default)
  c.schedule.name = "multistep"
  c.schedule.milestones = ("91 epochs", "136 epochs")  # 32k / 48k iterations at B=128
  c.schedule.gamma = 0.1
  c.warmup.length = "1 epochs"
  c.budget = "182 epochs"  # 64k iterations at B=128
  c.eval_every = "1 epochs"
  c.checkpoint_every = "5 epochs"
  c.target.value = 0.70 if arg == "resnet8" else 0.91
  c.target.stop = False
  return c
