"""ImageNet ResNet-50 in the recipe of Goyal et al. 2017 ("ImageNet in 1 hour").

- lr = 0.1 x B / 256 (linear scaling rule), gradual linear warmup over 5 epochs
  from 0.1 (Goyal et al. sec. 2.2), /10 at epochs 30, 60 and 80 of 90;
- Nesterov momentum 0.9, weight decay 1e-4 not applied to BN gamma/beta or biases;
- BatchNorm statistics over groups of 32 examples (their per-worker n = 32),
  last BN gamma of each residual block initialised to 0;
- loss averaged over the global batch; one shuffle per epoch.
Every length is in epochs, so the same file is right at B = 256 and at B = 8192:
  python -m lrscale.train --config=configs/imagenet_resnet50_goyal.py --workdir=runs/goyal_8k \
      --config.batch_size=8192 --config.dataset.data_dir=$HOME/tensorflow_datasets

Data: imagenet2012 prepared by TFDS (manual download of the ILSVRC tars to
DATA_DIR/downloads/manual, then `tfds build imagenet2012 --data_dir=DATA_DIR
--file_format=array_record`). Goyal et al. report 23.74% top-1 error at 8k and
23.60% at 256 (mean of 5 runs).
Input: imagenet2012 streams through grain worker processes (lrscale.data.pipeline),
each host reading only its rows of every batch; training images get Inception-style
random-resized-crop + flip at 224 (config.dataset.augment), a pure function of
(seed, epoch, index); batches travel as uint8 and are scaled on the device.
Compute in bfloat16 with float32 parameters, optimizer state and BN statistics.
Evaluation: the whole 50k validation split at every evaluation, through the pipeline's
padded full eval (uint8 batches scaled on the device, sharded over devices and hosts, each
example counted once; top-1 and top-5 accuracy), lrscale.engine.evaluate.
Offline stand-in (any machine; 20 steps cut the 90-epoch schedule short, hence the flag):
  python -m lrscale.data.synthetic_imagenet --data_dir=DIR
  python -m lrscale.train --config=configs/imagenet_resnet50_goyal.py --workdir=W \
      --config.dataset.name=lrscale_synthetic_imagenet --config.dataset.data_dir=DIR \
      --config.model.name=resnet18 --config.dataset.image_size=64 \
      --config.budget="20 steps" --config.allow_truncated_schedule=True
"""

from lrscale.config import base_config


def get_config():
  c = base_config()
  c.dataset.name = "imagenet2012"
  c.dataset.eval_split = "validation"
  c.dataset.image_size = 224
  c.dataset.augment = "inception_crop_flip"
  # eval_examples = 0 (default): every evaluation reads the whole 50k validation split
  # through the pipeline, padded and sharded over devices and hosts (lrscale.engine.evaluate).
  c.model.name = "resnet50"
  c.model.dtype = "bfloat16"
  c.model.bn_group_size = 32
  c.model.zero_init_last_bn = True
  c.batch_size = 256
  c.lr = 0.1
  c.scaling.rule = "linear"
  c.scaling.reference_batch = 256
  c.optimizer.name = "nesterov"
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.decay_mask = "no_bias_norm"
  c.optimizer.momentum_form = "goyal"  # v <- m v + lr g, with momentum correction
  c.optimizer.momentum_correction = True
  c.schedule.name = "multistep"
  c.schedule.milestones = ("30 epochs", "60 epochs", "80 epochs")
  c.schedule.gamma = 0.1
  c.warmup.length = "5 epochs"
  c.warmup.shape = "linear"
  c.warmup.init_lr = 0.1
  c.budget = "90 epochs"
  c.eval_every = "1 epochs"
  c.checkpoint_every = "1 epochs"
  c.sync_every = "10 steps"  # streamed batches are staged per segment
  c.eval_batch_size = 1000
  c.target.value = 0.75  # top-1 error < 0.25 (Shallue et al.'s target)
  c.target.stop = False
  return c
