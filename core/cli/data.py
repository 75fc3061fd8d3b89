"""Commands for the managed data folder: import-data, delete-data.

Each add_NAME(sub, parents) registers its command's parser right above the cmd_NAME(args, store) it runs.
"""
from __future__ import annotations

import sys

from core.cli.common import EXIT_OK, EXIT_REFUSED_FILES, Rejected
from core.runs.store import RunStore


def add_import_data(sub, parents) -> None:
    import_data = sub.add_parser("import-data", parents=parents,
                                 help="import a zip of class folders as an image-folder dataset in the managed "
                                      "data folder ($TRAINBOARD_DATASETS, default: the runs folder's .datasets)")
    import_data.add_argument("zip", metavar="ZIP")
    import_data.add_argument("--name", required=True, help="the dataset's name: letters, digits, - _ .")
    import_data.add_argument("--add", action="store_true", help="add to the dataset if it exists")
    import_data.set_defaults(func=cmd_import_data)


def cmd_import_data(args, store: RunStore) -> int:
    from core.data.imports import import_zip
    from core.data.uploads import UploadRefused, datasets_dir
    try:
        result = import_zip(args.zip, datasets_dir(store.root), args.name, add=args.add)
    except UploadRefused as error:
        raise Rejected(str(error))
    print(result.describe())
    for name, count in result.counts.items():
        print(f"  {name}: {count:,} images" + (f" ({result.added[name]:,} new)" if not result.created
                                                and name in result.added else ""))
    for refusal in result.refused:
        print(f"not imported: {refusal.path}: {refusal.reason}", file=sys.stderr)
    print(f"train on it with: python -m core train --dataset image-folder --data {result.path}")
    return EXIT_REFUSED_FILES if result.refused else EXIT_OK


def add_delete_data(sub, parents) -> None:
    delete_data = sub.add_parser("delete-data", parents=parents,
                                 help="delete a dataset imported with import-data or on the Datasets page, or "
                                      "one of its classes (not while a queued or running run trains on it)")
    delete_data.add_argument("name", metavar="NAME")
    part = delete_data.add_mutually_exclusive_group()
    part.add_argument("--class", dest="class_name", metavar="CLASS",
                      help="delete only this class, its folder and images")
    part.add_argument("--image", dest="images", action="append", metavar="CLASS/FILE",
                      help="delete only this image (relative to the dataset's folder, e.g. cat/3.png); repeatable")
    delete_data.add_argument("--yes", action="store_true", help="do not ask first")
    delete_data.set_defaults(func=cmd_delete_data)


def cmd_delete_data(args, store: RunStore) -> int:
    from core.data.uploads import (
        DatasetRefused,
        datasets_dir,
        delete_dataset,
        existing_dataset,
        removable_class,
        remove_class,
        remove_images,
    )
    root = datasets_dir(store.root)
    one_class = args.class_name is not None
    try:
        dataset = removable_class(root, args.name, args.class_name) if one_class else existing_dataset(root, args.name)
        if not args.yes:
            what = (f"class {args.class_name} ({dataset.counts[args.class_name]:,} images) of dataset {dataset.name}"
                    if one_class else f"{len(args.images)} image(s) of dataset {dataset.name}" if args.images
                    else f"dataset {dataset.name} ({len(dataset.counts)} classes, {dataset.images:,} images)")
            if not sys.stdin.isatty():
                raise Rejected(f"delete-data {args.name}: add --yes to delete without being asked")
            answer = input(f"delete {what} in {dataset.path}? Runs trained on it stay, but evaluating or resuming "
                           "them needs the data. [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return EXIT_OK
        if args.images:
            dataset, removed = remove_images(root, args.name, args.images, store)
            print(f"{removed:,} image(s) of dataset {dataset.name} deleted; {dataset.images:,} images left")
            return EXIT_OK
        if one_class:
            dataset, removed = remove_class(root, args.name, args.class_name, store)
            print(f"class {args.class_name} of dataset {dataset.name} deleted ({removed:,} images); "
                  f"{len(dataset.counts)} classes and {dataset.images:,} images left")
            return EXIT_OK
        dataset = delete_dataset(root, args.name, store)
    except DatasetRefused as error:
        raise Rejected(str(error))
    print(f"dataset {dataset.name} deleted ({dataset.images:,} images)")
    return EXIT_OK
