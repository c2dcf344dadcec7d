import torch
from conftest import load_script


def test_the_arguments_set_the_threads_and_keep_one_repeat_at_least(tmp_path):
    command = load_script("benchmarks/model_command.py")
    before = torch.get_num_threads()
    try:
        args = command.model_run_arguments(["--repeats", "0", "--threads", "1", "--results", str(tmp_path)], "d", repeats=3, threads=2)
        assert (args.model, args.repeats, args.threads, args.results) == (None, 1, 1, tmp_path)
        assert torch.get_num_threads() == 1
        defaults = command.model_run_arguments([], "d", repeats=3, threads=2)
        assert (defaults.repeats, defaults.threads, defaults.results) == (3, 2, command.RESULTS)
    finally:
        torch.set_num_threads(before)


def test_a_bundle_is_named_by_its_name_and_version(tiny_bundle):
    command = load_script("benchmarks/model_command.py")
    assert command.model_label(str(tiny_bundle)) == "tiny 0.1.0"
