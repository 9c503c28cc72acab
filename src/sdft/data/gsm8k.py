"""GSM8K answers as the model should learn to write them.

GSM8K (`openai/gsm8k`, or a file with `question`/`answer`) writes its worked answers with calculator
annotations and a final answer line: "Natalia sold 48/2 = <<48/2=24>>24 clips.\\n#### 72". Neither is
how a chat model talks, and a distilled rewrite is compared with the reference, so both are turned
into plain text: "Natalia sold 48/2 = 24 clips.\\nThe answer is 72."
"""

from __future__ import annotations

import re

_ANNOTATION = re.compile(r"<<[^<>\n]*>>")  # "<<48/2=24>>": the calculator's view of the step
# the last line, "#### 72" (GSM8K writes plain integers; signs, commas and decimals are kept as written)
_FINAL = re.compile(r"\n?[ \t]*####[ \t]*(-?\$?[\d,]*\.?\d+)[ \t]*\s*\Z")


def normalize_gsm8k_answer(answer: str) -> str:
    """Strip `<<..>>` annotations and turn the final '#### N' into 'The answer is N.'.

    Answers without a final '#### N' line are returned unchanged: they are not GSM8K's format.
    """
    m = _FINAL.search(answer)
    if m is None:
        return answer
    work = _ANNOTATION.sub("", answer[: m.start()]).rstrip()
    final = f"The answer is {m[1]}."
    return f"{work}\n{final}" if work else final
