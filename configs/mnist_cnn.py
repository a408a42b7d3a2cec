"""MNIST (or Fashion-MNIST) with Shallue et al. 2018's simple CNN, read from TFDS.

Needs a prepared TFDS copy in array_record format (one time, on a machine with
network; building needs TensorFlow there, reading here does not):
  tfds build mnist --data_dir=$HOME/tensorflow_datasets --file_format=array_record

Launch:
  python -m lrscale.train --config=configs/mnist_cnn.py --workdir=runs/mnist_cnn \
      --config.dataset.data_dir=$HOME/tensorflow_datasets
Fashion-MNIST (target val error 0.10 instead of 0.01):
  python -m lrscale.train --config=configs/mnist_cnn.py:fashion_mnist --workdir=runs/fmnist
"""

from lrscale.config import base_config


def get_config(arg: str = "mnist"):
  c = base_config()
  c.dataset.name = arg  # mnist | fashion_mnist
  c.dataset.eval_split = "test"
  c.model.name = "cnn"
  c.model.channels = (32, 64)
  c.model.dense = 1024
  c.batch_size = 256
  c.lr = 0.05
  c.optimizer.name = "nesterov"
  c.optimizer.momentum = 0.9
  c.schedule.name = "linear"  # Shallue et al.: linear decay
  c.schedule.alpha = 0.01
  c.budget = "20 epochs"
  c.eval_every = "0.25 epochs"
  c.checkpoint_every = "2 epochs"
  c.target.value = 0.99 if arg == "mnist" else 0.90  # val error 0.01 / 0.10
  c.target.stop = False
  return c
