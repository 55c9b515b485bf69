"""Folder sizes (`GET /nodes/{id}/usage`, `mountfs du`) stay exact through a randomized run
of creates, commits, moves, renames over existing files, deletes and restores: after it,
every folder's totals equal a full walk of the tree."""

from __future__ import annotations

import random

from tests.support.api_client import ApiClient, Json, chunks_of


def usage(api: ApiClient, node_id: str) -> tuple[int, int]:
    body = api.call("GET", f"nodes/{node_id}/usage")
    return int(body["bytes"]), int(body["files"])


def walk(api: ApiClient, folder: str, totals: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """Sizes and file count below `folder`, by listing everything; fills `totals`."""
    size = files = 0
    for child in api.list_children(folder):
        if child["kind"] == "file":
            size, files = size + child["size"], files + 1
        elif child["kind"] == "dir":
            below = walk(api, child["id"], totals)
            size, files = size + below[0], files + below[1]
    totals[folder] = (size, files)
    return size, files


def test_folder_sizes_match_a_full_walk_after_a_random_run(api: ApiClient) -> None:
    rng = random.Random(8)
    top = api.mkdir(api.root_id, "top")
    dirs: list[str] = [top["id"]]
    files: list[str] = []
    deleted: list[str] = []

    def fresh(node_id: str) -> Json:
        node: Json = api.get_node(node_id)
        return node

    for step in range(160):
        action = rng.choice(
            ["mkdir", "file", "file", "commit", "commit", "move", "over", "delete", "restore"]
        )
        if action == "mkdir":
            dirs.append(api.mkdir(rng.choice(dirs), f"d{step}")["id"])
        elif action == "file" or not files:
            node, _ = api.write_file(
                rng.choice(dirs), f"f{step}", rng.randbytes(rng.randrange(1, 3000))
            )
            files.append(node["id"])
        elif action == "commit":
            node = fresh(rng.choice(files))
            data = rng.randbytes(rng.randrange(0, 5000))
            api.commit(node["id"], chunks_of(data), node["head_revision"])
        elif action == "move":
            moved = fresh(rng.choice(files + dirs[1:]))
            target = rng.choice(dirs)
            api.update_node(
                moved["id"], moved["version"], parent_id=target, name=f"m{step}", expect=None
            )  # a move into its own subtree is refused (409): the totals must not change
        elif action == "over" and len(files) > 1:
            source, victim = (fresh(i) for i in rng.sample(files, 2))
            api.update_node(
                source["id"],
                source["version"],
                parent_id=victim["parent_id"],
                name=victim["name"],
                replace_id=victim["id"],
            )
            files.remove(victim["id"])
            deleted.append(victim["id"])
        elif action == "delete":
            victim = fresh(rng.choice(files))
            api.delete_node(victim["id"], victim["version"])
            files.remove(victim["id"])
            deleted.append(victim["id"])
        elif action == "restore" and deleted:
            back = deleted.pop(rng.randrange(len(deleted)))
            api.call("POST", f"nodes/{back}/restore", json={})
            files.append(back)
    totals: dict[str, tuple[int, int]] = {}
    walk(api, api.root_id, totals)
    for folder, expected in totals.items():
        assert usage(api, folder) == expected, folder
    assert usage(api, api.root_id)[1] == len(files)
    some = fresh(files[0])
    assert usage(api, some["id"]) == (some["size"], 1)
