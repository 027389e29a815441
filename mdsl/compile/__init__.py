"""Bound plan -> the exact commands each step runs. Pure: no I/O, every user value shell-quoted.

Layout: `parts` (typed command parts, `Command`), `actions` (what a step does,
as data), one module per engine (`postgres`, `sqlite`, `files`, `services`),
and `plan` (`compile_plan`, `CompiledStep`, `CompiledPlan`).
"""

from mdsl.compile.parts import Arg, Command, CompileError, Lit, SecretArg, SecretText, Sub
from mdsl.compile.plan import CompiledPlan, CompiledStep, compile_plan

__all__ = ["Arg", "Command", "CompileError", "Lit", "SecretArg", "SecretText", "Sub",
           "CompiledPlan", "CompiledStep", "compile_plan"]
