"""Lark, imported once for every syntax module, without the `regex` module."""

import sys

# Lark imports the third-party `regex` module whenever it is installed, though it only
# uses it when asked (Lark(regex=True)); we never ask, and `mdsl check` must start fast.
_NO_REGEX = "regex" not in sys.modules
if _NO_REGEX:
    sys.modules["regex"] = None  # makes `import regex` fail inside lark.utils
try:
    import lark
    from lark import Lark, Token, Transformer, Tree
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken
    from lark.lexer import Lexer
finally:
    if _NO_REGEX:
        del sys.modules["regex"]

__all__ = ["Lark", "Lexer", "Token", "Transformer", "Tree", "UnexpectedCharacters", "UnexpectedEOF", "UnexpectedToken",
           "lark"]
