"""Reading and writing user images and label maps, with errors that name the file.

Every decoder in the project goes through :mod:`portraitseg.io.read` (:func:`read_photo`: EXIF
orientation, colour modes, bit depth, size limits, colour profiles and transparency handled once);
every file the project writes goes through one writer, :func:`atomic_write_all` in
:mod:`portraitseg.io.write`, with :func:`write_image`, :func:`write_torch` and
:func:`write_figure` on top of it. :mod:`portraitseg.io.files` holds what both share.
"""

from portraitseg.config import DEFAULT_MAX_PIXELS
from portraitseg.io.files import (
    IMAGE_SUFFIXES,
    WRITE_FORMATS,
    InputError,
    check_output_not_input,
    same_file,
    sha256_file,
)
from portraitseg.io.read import (
    TRANSPARENT_BACKGROUND,
    MultiFrameWarning,
    Photo,
    read_image,
    read_label,
    read_matte,
    read_photo,
)
from portraitseg.io.write import (
    ALPHA_FORMATS,
    ICC_FORMATS,
    TEMPORARY,
    OutputError,
    WriteCheck,
    WriteError,
    atomic_write,
    atomic_write_all,
    check_destination,
    check_image,
    check_zip,
    encode_image,
    fsync_dir,
    image_format,
    output_notes,
    remove_stale_temporaries,
    temporary_name,
    write_figure,
    write_image,
    write_torch,
)

__all__ = [
    "ALPHA_FORMATS", "DEFAULT_MAX_PIXELS", "ICC_FORMATS", "IMAGE_SUFFIXES", "TEMPORARY",
    "TRANSPARENT_BACKGROUND", "WRITE_FORMATS", "InputError", "MultiFrameWarning", "OutputError",
    "Photo", "WriteCheck", "WriteError", "atomic_write", "atomic_write_all", "check_destination",
    "check_image", "check_output_not_input", "check_zip", "encode_image", "fsync_dir",
    "image_format", "output_notes", "read_image", "read_label", "read_matte", "read_photo",
    "remove_stale_temporaries", "same_file", "sha256_file", "temporary_name", "write_figure",
    "write_image", "write_torch",
]
