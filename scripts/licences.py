#!/usr/bin/env python3
"""The licences of what the daemon's binary is built from (its normal dependencies, for the
targets the packages are built for; build scripts' and tests' dependencies are not shipped).

    scripts/licences.py check            fails (exit 1) naming each crate whose licence
                                         expression allows none of ALLOWED (`make lint`)
    scripts/licences.py notice FILE      writes the third-party notice the packages ship

assume-roled is MIT OR Apache-2.0; every crate in the binary must be usable under one of the
permissive licences below, which are compatible with both. The expressions are cargo's
(SPDX, with the old "/" for OR); a crate without one (a licence file only) fails the check.
"""

import json
import os
import re
import subprocess
import sys

# Permissive licences compatible with distributing the binary under MIT or Apache-2.0.
ALLOWED = {
    "0BSD", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "BSL-1.0", "CC0-1.0", "ISC", "MIT",
    "MIT-0", "Unicode-3.0", "Unicode-DFS-2016", "Unlicense", "Zlib",
}
TARGETS = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]


def shipped_packages():
    """Every package the daemon's binary links, for any of TARGETS, by id."""
    shipped = {}
    for target in TARGETS:
        metadata = json.loads(subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", target],
            check=True, capture_output=True, text=True).stdout)
        packages = {p["id"]: p for p in metadata["packages"]}
        nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
        root = metadata["resolve"]["root"]
        stack, seen = [root], set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            for dep in nodes[node]["deps"]:
                if any(kind["kind"] is None for kind in dep["dep_kinds"]):
                    stack.append(dep["pkg"])
        shipped.update({i: packages[i] for i in seen if i != root})
    return sorted(shipped.values(), key=lambda p: (p["name"], p["version"]))


def tokens(expression):
    return re.findall(r"\(|\)|[A-Za-z0-9.+-]+", expression.replace("/", " OR "))


def permits(expression):
    """Whether the SPDX `expression` can be satisfied with ALLOWED licences alone."""
    words = tokens(expression)
    position = 0

    def either():  # term (OR term)*
        nonlocal position
        value = both()
        while position < len(words) and words[position] == "OR":
            position += 1
            value = both() or value
        return value

    def both():  # atom (AND atom)*
        nonlocal position
        value = atom()
        while position < len(words) and words[position] == "AND":
            position += 1
            value = atom() and value
        return value

    def atom():
        nonlocal position
        word = words[position]
        position += 1
        if word == "(":
            value = either()
            position += 1  # ")"
            return value
        if position < len(words) and words[position] == "WITH":
            position += 2  # an exception only widens what the licence permits
        return word in ALLOWED

    value = either()
    if position != len(words):
        raise ValueError(f"cannot read licence expression {expression!r}")
    return value


def check():
    refused = [p for p in shipped_packages() if not p["license"] or not permits(p["license"])]
    for package in refused:
        print(f"licences: {package['name']} {package['version']}: "
              f"{package['license'] or 'no licence expression'} allows none of the permitted licences",
              file=sys.stderr)
    return 1 if refused else 0


LICENCE_FILE = re.compile(r"^(licen[cs]e|copying|copyright|notice)([-_.].*)?$", re.IGNORECASE)


def licence_texts(package):
    """The licence and notice files in `package`'s source, as (name, text), by name."""
    directory = os.path.dirname(package["manifest_path"])
    found = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if LICENCE_FILE.match(name) and os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as text:
                found.append((name, text.read().strip()))
    return found


def notice(path):
    """The crates with their licence expressions, then every distinct licence and notice text
    their sources carry (MIT and Apache-2.0 ask for the text and notices to go with a binary),
    each once, naming the crates it came with."""
    packages = shipped_packages()
    lines = [
        "assume-roled is distributed under MIT OR Apache-2.0 (LICENSE-MIT, LICENSE-APACHE).",
        "",
        f"Its binary is built from these {len(packages)} crates, under the licences their",
        "authors declare; the licence and notice texts of their sources follow the list.",
        "",
    ]
    texts = {}
    for package in packages:
        crate = f"{package['name']} {package['version']}"
        source = package.get("repository") or f"https://crates.io/crates/{package['name']}"
        found = licence_texts(package)
        where = "" if found else "; its source has no licence file"
        lines.append(f"{crate}: {package['license']} ({source}{where})")
        for name, text in found:
            texts.setdefault(text, []).append(f"{crate} ({name})")
    for text, crates in texts.items():
        lines += ["", "=" * 78, "Of: " + ", ".join(crates), "=" * 78, "", text]
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["check"]:
        sys.exit(check())
    if len(sys.argv) == 3 and sys.argv[1] == "notice":
        sys.exit(notice(sys.argv[2]))
    sys.exit(__doc__)
