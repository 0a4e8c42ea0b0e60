"""Code answers: program extraction, tests in every accepted shape, verdicts that name the failing test, and the
shipped code task through the verify pool, the filter's format check and an eval through vLLM."""

import json

import pytest
from conftest import ROOT, teacher_dict

from cotdistill.code_verify import extract_program, normalise_tests, verify_code
from cotdistill.config import HFSource
from cotdistill.sources import load_problems
from cotdistill.verify import check_format
from cotdistill.verify_pool import verify_pairs

CODE_FILE = ROOT / "data/code_problems.jsonl"
SOURCE = HFSource(path=str(CODE_FILE), fields={"id": "id", "answer": None})


def fenced(code, tag="python"):
    return f"```{tag}\n{code}\n```"


@pytest.mark.parametrize("completion,program", [
    ("Idea first.\n" + fenced("print(1)") + "\nThen better:\n" + fenced("print(2)"), "print(2)\n"),
    (fenced("print(1)", "py") + "\n" + fenced("echo hi", "bash"), "print(1)\n"),  # other languages never run
    (fenced("print(1)", "") + "\nThat's it.", "print(1)\n"),                    # untagged: only without python
    (fenced("print(1)", "") + fenced("print(2)", "python3"), "print(2)\n"),
    ("<think>\n" + fenced("print('draft')") + "\n</think>\nFinal:\n" + fenced("print('final')"), "print('final')\n"),
    ("<think>\n" + fenced("print('draft')") + "\n</think>\nNo code here.", None),  # code only in the reasoning
    ("print(1)", None),
    ("```python\nprint(1)", None),                                                # unclosed: truncated
    (fenced("print(3)") + "<|im_end|><|im_start|>user\n" + fenced("print(4)"), "print(3)\n"),
])
def test_extract_program(completion, program):
    assert extract_program(completion) == program


def test_test_shapes():
    assert normalise_tests({"inputs": ["1\n", "2\n"], "outputs": ["1", "4"]}) == [
        {"input": "1\n", "output": "1"}, {"input": "2\n", "output": "4"}]
    assert normalise_tests("assert f(1) == 2") == [{"assert": "assert f(1) == 2"}]
    assert normalise_tests([{"input": ["1", "2"], "output": 3}]) == [{"input": "1\n2", "output": "3"}]
    for bad in ([], [{"input": "1"}], {"inputs": ["1"], "outputs": []}, 5):
        with pytest.raises(ValueError):
            normalise_tests(bad)


TESTS = [{"input": "2 3\n", "output": "5"}, {"input": "-1 1\n", "output": "0"}]


@pytest.mark.parametrize("program,correct,detail", [
    ("a, b = map(int, input().split())\nprint(a + b)", True, "2 tests passed"),
    ("a, b = map(int, input().split())\nprint(  a + b, '\\n')", True, "2 tests passed"),  # whitespace is not compared
    ("a, b = map(int, input().split())\nprint(abs(a) + b)", False,
     "test 2 of 2 (stdin/stdout): expected '0', got '2'"),
    ("print(int(input()) + 1)", False, "test 1 of 2 (stdin/stdout): exited with code 1: ValueError"),
    ("while True:\n    pass", False, "test 1 of 2 (stdin/stdout): timed out"),
])
def test_verdict_names_the_failing_test(program, correct, detail):
    v = verify_code("Solution:\n" + fenced(program), TESTS)
    assert v.correct is correct and v.detail.startswith(detail), v.detail
    assert v.extracted == program + "\n"


def test_assert_tests_and_missing_program():
    ok = verify_code(fenced("def add(a, b):\n    return a + b"), [{"assert": "assert add(2, 3) == 5"}])
    bad = verify_code(fenced("def add(a, b):\n    return a - b"), [{"assert": "assert add(2, 3) == 5"}])
    none = verify_code("I would use a loop.", [{"assert": "assert add(2, 3) == 5"}])
    assert ok.correct is True and bad.correct is False
    assert bad.detail == "test 1 of 1 (assert): assert on test line 1: expected 5, got -1"
    assert (none.correct, none.reason) == (False, "no_answer")
    assert verify_code(fenced("print(1)"), [{"nothing": 1}]).correct is None  # unreadable tests: cannot tell


ADD = [{"assert": "assert add(2, 3) == 5\nassert add(0, 0) == 0"}]
TRICKS = [  # (what the program tries, program, why it must fail)
    ("exits before the tests", "def add(a, b):\n    return a - b\nimport sys\nsys.exit(0)", "expected 5, got -1"),
    ("atexit + os._exit(0)", "import atexit, os\ndef add(a, b):\n    return a - b\natexit.register(os._exit, 0)",
     "expected 5, got -1"),
    ("os._exit(0) inside the test", "import os\ndef add(a, b):\n    os._exit(0)", "did not run to the end"),
    ("sys.exit(0) inside the test", "import sys\ndef add(a, b):\n    sys.exit(0)", "did not run to the end"),
    ("__eq__ always True", "class A:\n    def __eq__(s, o): return True\n    __hash__ = object.__hash__\n"
     "def add(a, b):\n    return A()", "is not plain data"),
    ("an int whose __eq__ lies", "class I(int):\n    def __eq__(s, o): return True\n    __hash__ = int.__hash__\n"
     "def add(a, b):\n    return I(7)", "expected 5, got 7"),
    ("a tuple whose __iter__ lies", "class T(tuple):\n    def __eq__(s, o): return True\n"
     "    def __iter__(s): return iter([5])\ndef add(a, b):\n    return T((1,))", "expected 5, got (1,)"),
    ("forged records", "import os\ndef add(a, b):\n    for fd in range(3, 20):\n"
     "        try: os.write(fd, b'x 0 i5\\nx end 1\\n')\n        except OSError: pass\n    return 0",
     "expected 5, got 0"),
    ("reads the test file", "def add(a, b):\n    return eval(open('tests.py').read().split('== ')[1].split()[0])",
     "No such file"),
    ("arithmetic that lies", "class W:\n    def __sub__(s, o): return 0.0\n    def __add__(s, o): return 5\n"
     "def add(a, b):\n    return W()", "is not plain data"),
]


@pytest.mark.parametrize("what,program,why", TRICKS, ids=[t[0] for t in TRICKS])
def test_assert_tests_cannot_be_passed_by_tricks(what, program, why):
    v = verify_code(fenced(program), ADD)
    assert v.correct is False and why in v.detail, (what, v.detail)


@pytest.mark.parametrize("program,test", [
    ("def f(x):\n    return sorted(x)", "assert f([3, 1]) == [1, 3]\nassert abs(f([2.5])[0] - 2.5) < 1e-9\n"
     "assert isinstance(f([]), list)\nassert all(f([i]) == [i] for i in range(3))\nassert f([2, 1]) != [2, 1]"),
    ("import collections\nP = collections.namedtuple('P', 'a b')\ndef f():\n    return P(1, 2)",
     "assert f() == (1, 2)\nassert f().a == 1"),
    ("class S:\n    def __init__(self): self.xs = []\n    def push(self, x): self.xs.append(x); return len(self.xs)",
     "s = S()\nassert s.push(4) == 1\nassert S().push(1) == 1 and s.xs == [4]"),
    ("def f(n):\n    return {i: str(i) for i in range(n)}", "def check(candidate):\n"
     "    assert candidate(2) == {0: '0', 1: '1'}\n    assert candidate(0) == {}\ncheck(f)"),
    ("def f():\n    return float('nan'), 10 ** 5000, 'x\\ud800'", "assert f()[1] == 10 ** 5000\n"
     "assert f()[2] == 'x\\ud800'\nassert f()[0] != f()[0]"),
    ("def f(n):\n    return (i for i in range(n))", "assert list(f(3)) == [0, 1, 2]"),       # a generator, consumed
    ("def f(n):\n    return map(str, range(n))", "assert sorted(f(2)) == sorted(['1', '0'])"),
    ("class Node:\n    def __init__(s, v, n=None):\n        s.v, s.n = v, n\ndef to_list(n):\n    out = []\n"
     "    while n:\n        out.append(n.v)\n        n = n.n\n    return out",
     "assert to_list(Node(1, Node(2))) == [1, 2]"),                                           # objects as arguments
])
def test_honest_assert_tests_still_pass(program, test):
    v = verify_code(fenced(program), [{"assert": test}])
    assert v.correct is True, v.detail


SKELETON_TESTS = ["assert is_prime(7)\nassert not is_prime(8)", "assert abs(f(2) - 1.5) < 1e-9",
                  "assert sorted(g([3, 1])) == sorted([1, 3])", "import math\nassert math.isclose(f(2), 1.5)",
                  "def check(candidate):\n    assert abs(candidate(2) - 1.5) < 1e-6\ncheck(f)",
                  "for x in [1, 2]:\n    assert f(x) == x * 0.75"]
SKELETON_TRICKS = [  # programs that are wrong, each trying a way around the assert's expectation
    ("shadowed builtins", "def is_prime(n): return True\ndef f(x): return 42\ndef g(xs): return [9]\n"
     "def abs(x): return 0\ndef sorted(x, *a, **k): return []\ndef len(x): return 0"),
    ("a patched module", "import math\nmath.isclose = lambda *a, **k: True\ndef is_prime(n): return n > 0\n"
     "def f(x): return 0.0\ndef g(xs): return [9]"),
    ("frame walking to the nonce", "import sys, os, re\nfr = sys._getframe(1).f_locals\n"
     "n = len(re.findall(r'__cotdistill_record\\(', fr['tests']))\n"
     "os.write(fr['rec_fd'], ''.join(f\"{fr['nonce']} {i} u( T )\\n\" for i in range(n)).encode()"
     " + f\"{fr['nonce']} end {n}\\n\".encode())\nos._exit(0)"),
    ("a forged record nested past any hash", "import sys, os\nfr = sys._getframe(1).f_locals\nd = 180000\n"
     "os.write(fr['rec_fd'], f\"{fr['nonce']} 0 e( {'u( ' * d}i0 {') ' * d})\\n\".encode())\nos._exit(0)"),
    ("reading its own memory", "import os\nprint(open('/proc/self/maps').read()[:10])"),
]


@pytest.mark.parametrize("what,program", SKELETON_TRICKS, ids=[t[0] for t in SKELETON_TRICKS])
def test_asserts_without_a_literal_cannot_be_faked(what, program):
    for test in SKELETON_TESTS:
        v = verify_code(fenced(program), [{"assert": test}])
        assert v.correct is False, (what, test, v.detail)


def test_asserts_without_a_literal_pass_an_honest_program():
    program = ("def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, n))\n"
               "def f(x):\n    return x * 0.75\ndef g(xs):\n    return list(xs)")
    for test in SKELETON_TESTS + ["assert all(f(i) == i * 0.75 for i in range(3))",  # a generator: not split
                                  "assert is_prime(7) and not is_prime(9)", "assert f(2) in (1.5, 2)"]:
        v = verify_code(fenced(program), [{"assert": test}])
        assert v.correct is True, (test, v.detail)


def test_an_assert_the_tests_own_logic_skips_is_skipped_as_in_python():
    program = fenced("def f(x):\n    if x < 0:\n        raise ValueError(x)\n    return x")
    test = "try:\n    f(-1)\n    assert False\nexcept ValueError:\n    pass\nassert f(2) == 2"
    assert verify_code(program, [{"assert": test}]).correct is True
    assert verify_code(fenced("def f(x):\n    return x"), [{"assert": test}]).correct is False


@pytest.mark.parametrize("program,test", [  # the program's names never stand in for the test's builtins or modules
    ("def all(*a, **k):\n    return True\ndef f(x):\n    return 0", "assert all(f(i) == 2 * i for i in range(3))"),
    ("def range(*a):\n    return []\ndef f(x):\n    return 0",
     "def check(candidate):\n    assert all(candidate(i) == 2 * i for i in range(3))\ncheck(f)"),
    ("import math\nmath.isclose = lambda *a, **k: True\ndef f(x):\n    return 0",
     "import math\nassert all(math.isclose(f(i), 2 * i) for i in range(1, 3))"),
])
def test_generator_asserts_use_the_real_builtins_and_modules(program, test):
    v = verify_code(fenced(program), [{"assert": test}])
    assert v.correct is False, v.detail


def test_shipped_code_task_solutions_pass_and_wrong_ones_fail():
    problems = load_problems(SOURCE)
    assert len(problems) >= 12 and all(p.answer is None and p.metadata["tests"] for p in problems)
    right = [(fenced(p.metadata["solution"]), p) for p in problems]
    wrong = [(fenced("print(42)"), p) for p in problems]
    verdicts = verify_pairs(right + wrong, workers=2)
    assert [v.correct for v in verdicts[:len(problems)]] == [True] * len(problems)
    assert [v.correct for v in verdicts[len(problems):]] == [False] * len(problems)
    assert all(v.detail.startswith("test 1 of") for v in verdicts[len(problems):])


def test_format_check_for_code_templates():
    assert check_format("So:\n" + fenced("print(1)"), False, "code") is None
    assert check_format("no code at all", False, "code") == "no final program (```python block)"
    assert check_format("<think>x\n" + fenced("print(1)") + "\n</think>\nok", True, "code") is not None


def test_eval_runs_the_code_task_through_vllm(tiny_model, vllm_teacher, tmp_path):
    from cotdistill import evaluate
    from cotdistill.config import EvalConfig

    cfg = EvalConfig.model_validate({
        "models": [{"name": "teacher", "role": "teacher", "serve": teacher_dict(tiny_model)},
                   {"name": "student", "role": "student", "serve": teacher_dict(tiny_model)}],
        "benchmarks": [{"name": "code", "template": "code_python", "source": {
            "kind": "hf", "path": str(CODE_FILE), "fields": {"id": "id", "answer": None}, "limit": 3}}],
        "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 8, "seed": 0}, "ks": [1, 2],
        "verify_workers": 1, "output_dir": str(tmp_path / "eval"), "progress": False})
    evaluate.run(cfg, teachers={"teacher": vllm_teacher, "student": vllm_teacher})
    verdicts = [json.loads(x) for x in (tmp_path / "eval/student/code/verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == 6 and all(v["reason"] == "no_answer" for v in verdicts)  # 8 random tokens: no program


@pytest.mark.parametrize("row,fields,message", [
    ({"id": "p", "question": "q", "tests": []}, {}, r"row 1: field 'tests': tests must be a non-empty list"),
    ({"id": "p", "question": "q", "tests": [{"input": "1"}]}, {}, r"row 1: field 'tests': test 0: needs 'input' and"),
    ({"id": "p", "question": "q", "io": "{\"inputs\": [1"}, {"tests": "io"}, r"field 'io': tests look like JSON but"),
    ({"id": "p", "question": "q"}, {"tests": "io"}, r"column 'io' \(source.fields.tests\) not found"),
])
def test_bad_tests_fail_at_load_in_one_line(tmp_path, row, fields, message):
    from conftest import write_jsonl

    from cotdistill.errors import CotdistillError

    path = write_jsonl(tmp_path / "code.jsonl", [row])
    with pytest.raises(CotdistillError, match=message):
        load_problems(HFSource(path=str(path), fields={"id": "id", "answer": None, **fields}))


def test_apps_input_output_column_and_a_code_template_without_tests(tmp_path):
    from conftest import write_jsonl

    from cotdistill.errors import CotdistillError
    from cotdistill.prompts import load_template

    io = json.dumps({"inputs": ["2\n"], "outputs": ["4\n"]})
    path = write_jsonl(tmp_path / "apps.jsonl", [{"id": "a", "question": "Double it.", "input_output": io}])
    p = load_problems(HFSource(path=str(path), fields={"id": "id", "answer": None, "tests": "input_output"}))[0]
    assert p.metadata["tests"] == [{"input": "2\n", "output": "4\n"}] and "input_output" not in p.metadata
    assert verify_code(fenced("print(int(input()) * 2)"), p.metadata["tests"]).correct is True
    bare = p.model_copy(update={"metadata": {}})
    with pytest.raises(CotdistillError, match=r"is a code template but problem 'a' has no tests; set source.fields"):
        load_template("code_python").render(bare)
