"""Benchmarks on real data: the paper's Fashion-MNIST convnets and a steps-to-target harness.

``data``: an offline Fashion-MNIST loader (numpy + gzip, no torchvision). ``tasks``: the FM-16 / FM-32
convnets exactly as the official ``Net``. ``steps_to_target``: train with any optimizer, record test accuracy
periodically and report the first step reaching each threshold (the paper's metric, reference section 5.1).
``runner``: ``nino-optim bench``, every (task, method, seed) run as one resumable JSON results file. ``report``:
``nino-optim report``, markdown tables (steps to target, reductions vs Adam, the paper's Table 2) and a PNG.
"""
from .data import FashionMNIST, fashion_mnist_dir, load_fashion_mnist
from .steps_to_target import Curve, evaluate, set_threads, train_steps_to_target
from .tasks import TASKS, ConvNet, Task, build_model

__all__ = ["TASKS", "ConvNet", "Curve", "FashionMNIST", "Task", "build_model", "evaluate", "fashion_mnist_dir",
           "load_fashion_mnist", "set_threads", "train_steps_to_target"]
