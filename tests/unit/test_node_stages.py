"""Reading the classic builder's output for the image each build stage ended with."""

from __future__ import annotations

from shipwreck_node.dockerruntime import StageImages

OUTPUT = """\
Step 1/9 : FROM shipwreck/base-python:bookworm AS deps
 ---> 358fde397b01
Step 2/9 : RUN python3 -m venv /opt/venv
 ---> Using cache
 ---> 84953d62554a
Step 3/9 : RUN /opt/venv/bin/pip install -r /tmp/requirements.txt
 ---> Running in 388144157d64
Successfully installed humanize-4.9.0
Removing intermediate container 388144157d64
 ---> 511bfa591841
Step 4/9 : FROM shipwreck/base-python:bookworm
 ---> 358fde397b01
Step 5/9 : COPY --from=deps /opt/venv /opt/venv
 ---> 689aa9a1de63
Step 6/9 : LABEL org.shipwreck.app=hello
 ---> Running in a880d23f5e1f
Removing intermediate container a880d23f5e1f
 ---> b6467f5da412
Successfully built b6467f5da412
"""


def test_each_stage_ends_with_the_image_of_its_last_step() -> None:
    stages = StageImages()
    stages.feed(OUTPUT)
    assert stages.ends() == {"deps": "511bfa591841", "1": "b6467f5da412"}


def test_lines_split_across_chunks_are_read_whole() -> None:
    stages = StageImages()
    for i in range(0, len(OUTPUT), 7):
        stages.feed(OUTPUT[i : i + 7])
    assert stages.ends()["deps"] == "511bfa591841"


def test_a_build_without_named_stages_names_none() -> None:
    stages = StageImages()
    stages.feed("Step 1/2 : FROM base\n ---> 358fde397b01\nStep 2/2 : COPY src/ /app/\n")
    stages.feed(" ---> 689aa9a1de63\n")
    assert stages.ends() == {"0": "689aa9a1de63"}
