"""The hand-written contextual lexer: the grammar's tokens at a fraction of Lark's cost."""

from __future__ import annotations

import re

from mdsl.syntax._lark import Lexer, Token, UnexpectedCharacters
from mdsl.syntax.transform import context

# One regex finds the next token's shape after any blanks; which terminal a word
# becomes depends on the parser state, decided in PlanLexer.lex.
# Strings are matched "unrolled" (`"[^"\\]*(?:\\.[^"\\]*)*"`): the same language as the
# grammar's `"([^"\\\n]|\\.)*"`, but linear in the string's length; the alternation form
# takes superlinear time in Python's re (a 4 MB string: 0.3 s, 8 MB: 2.6 s).
_NEXT_RE = re.compile(
    r'[ \t\r\n\f]*(?:(?P<c>#[^\n]*)|(?P<s>"[^"\\\n]*(?:\\.[^"\\\n]*)*")|(?P<w>[a-z_][a-z0-9_]*)|(?P<i>[0-9]+)'
    r'|(?P<p>[{}\[\](),:=]))'
)
_BLANKS_RE = re.compile(r"[ \t\r\n\f]*")
_KEY_AFTER_RE = re.compile(r"[ \t]*=")
_LABEL_AFTER_RE = re.compile(r'[ \t]*:(?![ \t]*")')


class PlanLexer(Lexer):
    """The contextual lexer of the grammar, written out for speed (Lark's is most of a parse).

    It makes exactly the tokens Lark's `lexer="contextual"` makes (tests/syntax compares the
    two on fuzzed input): in each parser state only the terminals that state accepts are
    tried, KEY (priority 3) before LABEL (2) before the rest; a word becomes a keyword where
    the state accepts that keyword, else a NAME; where no accepted terminal matches, the
    token the whole grammar would see is passed on, and the parser reports it as unexpected.
    """

    __future_interface__ = 2

    def __init__(self, conf):
        self.terminals_by_name = conf.terminals_by_name
        word = re.compile(r"[a-z_][a-z0-9_]*")
        self.keywords = {}  # "stop" -> "STOP"
        self.punct = {}  # "{" -> "LBRACE"
        for t in conf.terminals:
            if t.pattern.type == "str":
                if word.fullmatch(t.pattern.value):
                    self.keywords[t.pattern.value] = t.name
                else:
                    self.punct[t.pattern.value] = t.name
        # Where NAME is not accepted, Lark tries keywords as plain strings, longest first.
        self.by_length = sorted(self.keywords.items(), key=lambda kv: (-len(kv[0]), kv[1]))
        self.terminal_names = frozenset(self.terminals_by_name)
        self.ignore = frozenset(conf.ignore)
        self.states = {}
        self.parse_table = None

    def _state(self, pos):
        """(accepted terminals, KEY accepted, LABEL accepted, NAME accepted) of parser state `pos`."""
        info = self.states.get(pos)
        if info is None:
            acc = frozenset(self.parse_table.states[pos]) & self.terminal_names
            info = (acc, "KEY" in acc, "LABEL" in acc, "NAME" in acc)
            self.states[pos] = info
        return info

    def _word_type(self, text, start, end, info):
        """(type, end) of the word text[start:end] in a parser state; the whole grammar's view if none fits."""
        acc, key_ok, label_ok, name_ok = info
        if key_ok and _KEY_AFTER_RE.match(text, end):
            return "KEY", end
        if label_ok:
            m = _LABEL_AFTER_RE.match(text, end)
            if m:
                return "LABEL", m.end()
        kw = self.keywords.get(text[start:end])
        if name_ok:
            return (kw if kw in acc else "NAME"), end
        for s, name in self.by_length:
            if name in acc and text.startswith(s, start):
                return name, start + len(s)
        # Nothing this state accepts fits: pass on what the whole grammar sees; the parser rejects it.
        if _KEY_AFTER_RE.match(text, end):
            return "KEY", end
        m = _LABEL_AFTER_RE.match(text, end)
        if m:
            return "LABEL", m.end()
        return kw or "NAME", end

    def _end(self, text, pos, line, line_start, lexer_state, parser_state) -> None:
        """At text[pos], where no token starts: the end of the text after blanks, or an error."""
        blank_end = _BLANKS_RE.match(text, pos).end()
        newlines = text.count("\n", pos, blank_end)
        if newlines:
            line += newlines
            line_start = text.rindex("\n", pos, blank_end) + 1
        if blank_end >= len(text):
            return
        acc = self._state(parser_state.state_stack[-1])[0]
        raise UnexpectedCharacters(text, blank_end, line, blank_end - line_start + 1,
                                   allowed=set(acc - self.ignore), state=parser_state,
                                   token_history=lexer_state.last_token and [lexer_state.last_token],
                                   terminals_by_name=self.terminals_by_name)

    def lex(self, lexer_state, parser_state):
        text = lexer_state.text.text
        pos, line, line_start = 0, 1, 0
        self.parse_table = parser_state.parse_conf.parse_table
        stack = parser_state.state_stack  # changed in place by the parser
        states = self.states
        state_info = self._state
        word_type = self._word_type
        punct = self.punct
        match = _NEXT_RE.match
        count = text.count
        new_token = Token._future_new
        comments = context.comments  # what the reference parser's COMMENT callback collects
        while True:
            m = match(text, pos)
            if m is None:
                self._end(text, pos, line, line_start, lexer_state, parser_state)
                return
            kind = m.lastgroup
            start = m.start(kind)
            end = m.end()
            if start != pos:
                newlines = count("\n", pos, start)
                if newlines:
                    line += newlines
                    line_start = text.rindex("\n", pos, start) + 1
            if kind == "w":
                info = states.get(stack[-1]) or state_info(stack[-1])
                type_, end = word_type(text, start, end, info)
            elif kind == "s":
                type_ = "STRING"
            elif kind == "p":
                type_ = punct[text[start]]
            elif kind == "i":
                type_ = "INT"
            else:
                comments.append(new_token("COMMENT", text[start:end], start, line, start - line_start + 1, line,
                                          end - line_start + 1, end))
                pos = end
                continue
            tok = new_token(type_, text[start:end], start, line, start - line_start + 1, line,
                            end - line_start + 1, end)
            pos = end
            yield tok
