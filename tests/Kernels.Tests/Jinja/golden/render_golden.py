#!/usr/bin/python3
"""Renders the Jinja golden cases with Debian's python3-jinja2, configured as transformers'
apply_chat_template configures it, into expected.json (read by JinjaGoldenTests.cs).

    apt-get install -y python3-jinja2
    /usr/bin/python3 tests/Kernels.Tests/Jinja/golden/render_golden.py

Environment (transformers, utils/chat_template_utils.py `_compile_jinja_template`):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]) plus a no-op
{% generation %} block, tojson = json.dumps(ensure_ascii=False, ...), raise_exception, strftime_now.
strftime_now is pinned to NOW so outputs are reproducible. Chat cases render with the variables
MoeServer's ChatTemplate passes: messages, tools (None without tools), documents (None),
add_generation_prompt, bos_token, eos_token and the conversation's extra kwargs.
"""
import json
import os
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = datetime(2024, 7, 26, 14, 5, 9)
BOS, EOS = "<s>", "</s>"


class GenerationNoop(Extension):
    """transformers' AssistantTracker, minus the tracking: {% generation %} renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return NOW.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationNoop, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(env, source, variables):
    try:
        return {"output": env.from_string(source).render(**variables)}
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"error": "TemplateSyntaxError", "message": e.message}
    except Exception as e:  # noqa: BLE001 - the kind is what the C# test checks
        kind = type(e).__name__
        if type(e) is jinja2.exceptions.TemplateError:
            kind = "raise_exception"
        return {"error": kind, "message": str(e)}


# name, template, variables. Each one exercises a construct; the C# interpreter must agree byte for byte
# (or fail where jinja2 fails).
MSGS = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
CONSTRUCTS = [
    ("text_only", "plain text\nsecond line\n", {}),
    ("output_string", "{{ 'hello' }} {{ \"double\" }}", {}),
    ("output_numbers", "{{ 1 }} {{ -2 }} {{ 3.5 }} {{ 10 / 4 }} {{ 10 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1_000 }}", {}),
    ("float_repr", "{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1.5e-7 }} {{ 0.0001 }} {{ 123456789.125 }} {{ 2.0 * 3 }} {{ x }}", {"x": 1e100}),
    ("output_constants", "{{ true }} {{ false }} {{ none }} {{ True }} {{ None }}", {}),
    ("output_list_dict_repr", "{{ [1, 'a', none, true, 2.5] }} {{ {'k': 'v', 'n': [1]} }} {{ ('t', 1) }} {{ (1,) }} {{ [\"it's\"] }}", {}),
    ("comment", "a{# a comment #}b {#- strip -#} c", {}),
    ("ws_minus", "a   {{- 'b' -}}   c\n  {%- if true -%}  d  {%- endif -%}  e", {}),
    ("trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter\n", {}),
    ("lstrip_blocks", "start\n    {% if true %}\n    indented\n    {% endif %}\nend", {}),
    ("lstrip_not_after_text", "x  {% if true %}y{% endif %}  z", {}),
    ("lstrip_comment", "a\n    {# c #}\nb", {}),
    ("plus_disables_lstrip", "a\n    {%+ if true %}b{% endif %}", {}),
    ("plus_disables_trim", "{% if true +%}\nb{% endif %}", {}),
    ("var_no_trim", "{{ 'a' }}\nb", {}),
    ("trailing_newline_dropped", "line\n", {}),
    ("two_trailing_newlines", "line\n\n", {}),
    ("crlf", "{% if true %}\r\nx\r\n{% endif %}\r\n", {}),
    ("raw_block", "{% raw %}{{ not evaluated }}{% endraw %}", {}),
    ("if_elif_else", "{% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}other{% endif %},{% endfor %}", {}),
    ("for_else", "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}|{% for x in none_list %}{{ x }}{% else %}undef-empty{% endfor %}", {}),
    ("for_loop_vars", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}", {}),
    ("loop_prev_next", "{% for x in [1, 2, 3] %}[{{ loop.previtem }}|{{ loop.nextitem }}|{{ loop.previtem is defined }}]{% endfor %}", {}),
    ("loop_cycle", "{% for x in range(5) %}{{ loop.cycle('odd', 'even') }} {% endfor %}", {}),
    ("loop_filter", "{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.content }}{{ ',' if not loop.last }}{% endfor %}", {"messages": MSGS}),
    ("loop_nested_depth", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.depth }}{{ a }}{{ b }}{{ loop.index }} {% endfor %}{{ loop.depth }}|{% endfor %}", {}),
    ("loop_unpack_items", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {"d": {"b": 1, "a": 2, "c": [3]}}),
    ("loop_dict_keys", "{% for k in d %}{{ k }}{% endfor %}", {"d": {"z": 1, "y": 2}}),
    ("loop_break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("loop_scope", "{% set x = 5 %}{% for i in [1, 2] %}[{{ x }}]{% set x = i %}{% endfor %}|{{ x }}", {}),
    ("if_scope_leaks", "{% if true %}{% set y = 'inner' %}{% endif %}{{ y }}", {}),
    ("namespace", "{% set ns = namespace(count=0, found=false) %}{% for x in [1, 5, 2, 7] %}{% if x > 3 %}{% set ns.count = ns.count + 1 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.found }}", {}),
    ("namespace_empty_then_set", "{% set ns = namespace() %}{% set ns.items = [] %}{% for x in 'ab' %}{% set ns.items = ns.items + [x ~ x] %}{% endfor %}{{ ns.items | join(',') }}", {}),
    ("set_tuple_unpack", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 3, 4 %}{{ t }}", {}),
    ("set_block", "{% set body %}Hello {{ name }}!{% endset %}[{{ body }}]", {"name": "Ana"}),
    ("set_block_filter", "{% set body | upper | trim %}  shout {{ 'it' }}  {% endset %}[{{ body }}]", {}),
    ("macro_basic", "{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Bo') }} {{ greet('Cy', 'Hi') }} {{ greet(greeting='Yo', name='Di') }}", {}),
    ("macro_sees_globals", "{% set suffix = '!' %}{% macro m(x) %}{{ x }}{{ suffix }}{{ bos_token }}{% endmacro %}{{ m('a') }}", {"bos_token": "<s>"}),
    ("macro_recursive", "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1) | int }}{% endif %}{% endmacro %}{{ fact(5) }}", {}),
    ("macro_varargs", "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3) }}", {}),
    ("macro_too_many_args", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}", {}),
    ("macro_caller", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ 1 + 1 }}{% endcall %}", {}),
    ("macro_caller_args", "{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}<{{ x }}>{% endcall %}", {}),
    ("filter_block", "{% filter upper %}shout {{ 'this' }}{% endfilter %}", {}),
    ("with_block", "{% with a = 1, b = 'x' %}{{ a }}{{ b }}{% endwith %}[{{ a }}]", {}),
    ("generation_block", "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}", {"messages": MSGS}),
    ("subscript_attr", "{{ m['role'] }} {{ m.role }} {{ l[0] }} {{ l[-1] }} {{ l.1 }} {{ s[1] }} {{ s[-1] }}", {"m": {"role": "user"}, "l": [10, 20, 30], "s": "héllo"}),
    ("slicing", "{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ l[1:3] }} {{ s[2:] }} {{ s[::-1] }} {{ l[5:] }} {{ l[-2:] }}", {"l": [1, 2, 3, 4], "s": "abcdef"}),
    ("messages_slice", "{% for m in messages[1:] %}{{ m.role }} {% endfor %}{{ messages[0]['content'] }}", {"messages": MSGS}),
    ("dict_get_keys_values", "{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d.keys() | list }} {{ d.values() | list }}", {"d": {"a": 1, "b": 2}}),
    ("dict_method_shadows_key", "{{ d.items is defined }} {{ d['items'] }} {{ d.role }}", {"d": {"items": "key-value", "role": "r"}}),
    ("dict_literal_and_in", "{% set d = {'a': 1, 'b': [1, 2]} %}{{ 'a' in d }} {{ 'z' in d }} {{ 'z' not in d }} {{ d['b'][1] }}", {}),
    ("in_operator", "{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'x' in [] }} {{ 3 not in [1] }} {{ 'a' in undefined_thing }}", {}),
    ("string_methods_strip", "[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ 'xxaxx'.strip('x') }}][{{ '\\n\\nk\\n'.lstrip('\\n') }}]", {"s": "  pad \n"}),
    ("string_methods_split", "{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a-b-c'.split('-', 1) }} {{ 'x</think>y</think>z'.split('</think>')[-1] }} {{ 'a b c'.rsplit(' ', 1) }}", {}),
    ("string_methods_case", "{{ s.upper() }} {{ s.lower() }} {{ s.title() }} {{ s.capitalize() }} {{ \"they're bill's\".title() }}", {"s": "hello wORLD"}),
    ("string_methods_affix", "{{ s.startswith('<tool') }} {{ s.endswith('>') }} {{ s.startswith(('x', '<t')) }} {{ s.endswith('z') }}", {"s": "<tool_response>"}),
    ("string_methods_replace_find", "{{ s.replace('a', 'o') }} {{ s.replace('a', 'o', 1) }} {{ s.find('n') }} {{ s.find('q') }} {{ s.count('a') }}", {"s": "banana"}),
    ("string_methods_format_join", "{{ '{} and {}'.format('x', 1) }} {{ '{0}{1}{0}'.format('a', 'b') }} {{ '{name}!'.format(name='N') }} {{ '-'.join(['a', 'b']) }}", {}),
    ("string_methods_misc", "{{ '42'.isdigit() }} {{ 'ab'.isalpha() }} {{ 'a\\nb\\r\\nc'.splitlines() }} {{ 'pre_x'.removeprefix('pre_') }}", {}),
    ("string_percent_format", "{{ '%s is %d years' % ('Al', 30) }} {{ '%.2f' % 3.14159 }} {{ '%s' % 'one' }}", {}),
    ("concat_tilde", "{{ 'a' ~ 1 ~ none ~ true ~ undefined_var ~ [1] }}", {}),
    ("concat_precedence_error", "{{ 'a' ~ 1 + 2 }}", {}),
    ("plus_string_int_error", "{{ 'a' + 1 }}", {}),
    ("list_ops", "{{ [1, 2] + [3] }} {{ [0] * 3 }} {{ 'ab' * 2 }} {{ [1, 2, 2].count(2) }} {{ ['a', 'b'].index('b') }}", {}),
    ("comparisons", "{{ 1 < 2 }} {{ 2 <= 2 }} {{ 'b' > 'a' }} {{ 1 == 1.0 }} {{ 1 != '1' }} {{ [1, 2] < [1, 3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ true == 1 }}", {}),
    ("logic", "{{ true and 'x' }} {{ false or 'y' }} {{ not none }} {{ 0 or '' or [] }}| {{ none and 1 }} {{ not (1 and 0) }}", {}),
    ("truthiness", "{% for v in [0, 1, '', 'a', [], [0], {}, {'k': 1}, none, 0.0] %}{{ 'T' if v else 'F' }}{% endfor %}", {}),
    ("conditional_expr", "{{ 'yes' if x else 'no' }} {{ 'only-if' if false }}| {{ 1 if x else 2 if y else 3 }}", {"x": False, "y": True}),
    ("arith_mixed", "{{ 1 + 2.5 }} {{ 3 - true }} {{ -x }} {{ +x }} {{ 2 ** 0.5 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}", {"x": 4}),
    ("division_by_zero", "{{ 1 / 0 }}", {}),
    ("tests_basic", "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ n is none }} {{ s is string }} {{ d is mapping }} {{ l is iterable }} {{ s is iterable }} {{ 3 is number }} {{ 's' is number }} {{ l is sequence }} {{ d is sequence }}", {"x": 1, "n": None, "s": "t", "d": {}, "l": []}),
    ("tests_true_false", "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }} {{ true is boolean }} {{ 1 is integer }} {{ 1.0 is float }} {{ true is number }}", {}),
    ("tests_args", "{{ 4 is divisibleby 2 }} {{ 5 is divisibleby(2) }} {{ 3 is odd }} {{ 4 is even }} {{ 'a' is eq 'a' }} {{ 2 is gt 1 }} {{ 2 is lt(1) }} {{ 'a' is in ['a'] }} {{ 1 is sameas 1 }} {{ 'abc' is lower }} {{ 'ABC' is upper }}", {}),
    ("tests_not", "{{ x is not defined }} {{ x is not none }} {{ not x is defined }}", {}),
    ("undefined_renders_empty", "[{{ nothing }}][{{ m.missing }}][{{ l[9] }}][{{ nothing | default('d') }}][{{ m.missing | length }}]", {"m": {}, "l": []}),
    ("undefined_attr_error", "{{ nothing.attr }}", {}),
    ("undefined_item_error", "{{ m.missing.deeper }}", {"m": {}}),
    ("undefined_call_error", "{{ nothing() }}", {}),
    ("undefined_arith_error", "{{ nothing + 1 }}", {}),
    ("none_attr_is_undefined", "[{{ n.x }}] {{ n.x is defined }}", {"n": None}),
    ("filter_tojson", "{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ d | tojson(sort_keys=true) }}|{{ s | tojson }}|{{ s | tojson(ensure_ascii=true) }}", {"d": {"b": [1, 2.5, None, True], "a": {"x": "y"}, "e": {}, "f": []}, "s": "é\"\\\n\t\u0001<>&'🙂"}),
    ("filter_tojson_scalars", "{{ 1 | tojson }} {{ 1.0 | tojson }} {{ none | tojson }} {{ true | tojson }} {{ 'x' | tojson }} {{ [] | tojson(indent=4) }} {{ [1, [2]] | tojson(indent=4) }} {{ {'a': 1} | tojson(separators=[',', ':']) }}", {}),
    ("filter_tojson_undefined_error", "{{ nothing | tojson }}", {}),
    ("filter_trim_length", "[{{ s | trim }}] {{ s | length }} {{ l | length }} {{ d | count }} {{ 'héllo🙂' | length }} [{{ 'xxhixx' | trim('x') }}]", {"s": "  a b \n", "l": [1, 2], "d": {"a": 1}}),
    ("filter_first_last", "{{ l | first }} {{ l | last }} {{ 'abc' | first }} {{ 'abc' | last }} [{{ [] | first }}]", {"l": [3, 4, 5]}),
    ("filter_join", "{{ l | join }} {{ l | join(', ') }} {{ users | join(', ', attribute='name') }}", {"l": ["a", "b", 1], "users": [{"name": "x"}, {"name": "y"}]}),
    ("filter_default", "{{ u | default('dflt') }} {{ '' | default('empty', true) }} {{ '' | default('empty') }} {{ none | default('nn') }} {{ none | d('nn', true) }} {{ 0 | default(5, boolean=true) }}", {}),
    ("filter_case", "{{ 'Hello' | upper }} {{ 'Hello' | lower }} {{ 'hello wORLD-foo (bar' | title }} {{ 'hELLO' | capitalize }}", {}),
    ("filter_replace", "{{ 'aaa' | replace('a', 'b') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'x\\ny' | replace('\\n', ' ') }}", {}),
    ("filter_selectattr", "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }} {{ messages | rejectattr('role', 'eq', 'user') | list | length }} {{ items | selectattr('on') | map(attribute='n') | join }}", {"messages": MSGS, "items": [{"n": "a", "on": True}, {"n": "b", "on": False}, {"n": "c"}]}),
    ("filter_selectattr_defined", "{{ items | selectattr('x', 'defined') | list | length }} {{ items | rejectattr('x', 'none') | list | length }}", {"items": [{"x": 1}, {"y": 2}, {"x": None}]}),
    ("filter_select_reject", "{{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('odd') | list }} {{ [0, 1, '', 'a'] | select | list }} {{ [1, 5, 9] | select('gt', 4) | list }}", {}),
    ("filter_map", "{{ ['a', 'b'] | map('upper') | list }} {{ users | map(attribute='name') | list }} {{ users | map(attribute='age', default=0) | list }} {{ users | map(attribute='info.city') | list }}", {"users": [{"name": "x", "age": 3, "info": {"city": "P"}}, {"name": "y", "info": {"city": "Q"}}]}),
    ("filter_list_items", "{{ 'ab' | list }} {{ d | list }} {{ d | items | list }} {{ d.items() | list }}", {"d": {"k": 1, "j": 2}}),
    ("filter_string_int_float", "{{ 12 | string }} {{ [1] | string }} {{ '42' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '3.5' | float }} {{ 'q' | float }} {{ 2 | float }} {{ '0x1A' | int(0, 16) }}", {}),
    ("filter_abs_round", "{{ -3 | abs }} {{ (-2.5) | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 2.1 | round(0, 'ceil') }}", {}),
    ("filter_indent", "[{{ s | indent }}] [{{ s | indent(2, true) }}] [{{ s | indent(first=true, blank=true) }}] [{{ s | indent('> ') }}]", {"s": "a\n\nb\nc"}),
    ("filter_unique_reverse_sort", "{{ [3, 1, 3, 2] | unique | list }} {{ ['a', 'A', 'b'] | unique | list }} {{ [1, 2, 3] | reverse | list }} {{ 'abc' | reverse }} {{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort }} {{ ['b', 'A', 'c'] | sort(case_sensitive=true) }} {{ [3, 1, 2] | sort(reverse=true) }}", {}),
    ("filter_sort_attribute", "{{ users | sort(attribute='age') | map(attribute='name') | join(',') }} {{ d | dictsort }}", {"users": [{"name": "x", "age": 30}, {"name": "y", "age": 20}], "d": {"b": 1, "A": 2, "c": 0}}),
    ("filter_safe_escape", "{{ '<b>' | safe }} {{ '<a href=\"x\">&\\'' | e }} {{ '<i>' | escape }}", {}),
    ("filter_min_max_sum", "{{ [3, 1, 2] | min }} {{ [3, 1, 2] | max }} {{ [1, 2, 3] | sum }} {{ users | sum(attribute='n') }}", {"users": [{"n": 2}, {"n": 5}]}),
    ("filter_chain_precedence", "{{ -3 | abs }} {{ 'a' ~ 'b' | upper }} {{ ('a' ~ 'b') | upper }} {{ l | length > 1 }} {{ not l | length }}", {"l": [1, 2]}),
    ("range_global", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(5, 0, -2) | list }}", {}),
    ("dict_global", "{{ dict(a=1, b='x') }} {{ dict({'z': 0}, y=1) }}", {}),
    ("raise_exception", "{% if messages | length > 1 %}{{ raise_exception('Too many messages: ' ~ messages | length) }}{% endif %}ok", {"messages": MSGS}),
    ("strftime_now", "{{ strftime_now('%Y-%m-%d %H:%M:%S') }} {{ strftime_now('%d %b %Y') }} {{ strftime_now('%A %B %-d %I%p %j %y') }}", {}),
    ("immutable_list_append", "{% set l = [1] %}{{ l.append(2) }}{{ l }}", {}),
    ("immutable_dict_update", "{% set d = {} %}{{ d.update({'a': 1}) }}", {}),
    ("unknown_filter_error", "{{ 'x' | no_such_filter }}", {}),
    ("syntax_error_unclosed", "{% if true %}never closed", {}),
    ("syntax_error_bad_tag", "{% frobnicate %}", {}),
    ("syntax_error_expr", "{{ 1 + }}", {}),
    ("tojson_nested_message", "{{ messages[0] | tojson }}", {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": [1, {"b": "ü"}]}}}]}]}),
    ("string_escapes", "{{ 'tab\\tnl\\nq\\'dq\\\"bs\\\\' }}|{{ \"\\u00e9\\x41\" }}|{{ 'adjacent' 'strings' }}", {}),
    ("content_is_string_or_parts", "{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}{{ p.text }}{% endfor %}{% endif %};{% endfor %}", {"messages": [{"role": "user", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "p1"}, {"type": "text", "text": "p2"}]}]}),
    ("whitespace_heavy_template", "{%- for m in messages %}\n    {%- if m.role == 'user' %}\n        {{- '[U]' + m.content }}\n    {%- else %}\n        {{- '[O]' + m.content }}\n    {%- endif %}\n{%- endfor %}\n{{- '\\n' }}", {"messages": MSGS}),
    ("mixed_trim_lstrip_text", "<s>\n{% for m in messages %}\n  {{ m.role }}: {{ m.content }}\n{% endfor %}\n</s>\n", {"messages": MSGS}),
    ("loop_last_index_tricks", "{% for m in messages %}{% if loop.index0 > 0 and messages[loop.index0 - 1].role == 'user' %}<after-user>{% endif %}{{ m.role[0] }}{% endfor %}", {"messages": MSGS}),
    ("is_defined_on_dict_keys", "{% for m in messages %}{{ m.tool_calls is defined }}{{ 'tool_calls' in m }}{% endfor %}", {"messages": [{"role": "a", "tool_calls": []}, {"role": "b"}]}),
    ("generator_truthiness", "{{ 'T' if ([] | select) else 'F' }} {{ 'T' if (messages | selectattr('role', 'eq', 'nobody')) else 'F' }} {{ messages | selectattr('role', 'eq', 'nobody') | list | length }} {{ 'T' if (messages | selectattr('role', 'eq', 'nobody') | list) else 'F' }}", {"messages": MSGS}),
    ("generator_has_no_len", "{{ messages | map(attribute='role') | length }}", {"messages": MSGS}),
    ("generator_first_join_sort", "{{ messages | map(attribute='role') | first }} {{ messages | map(attribute='role') | join('/') }} {{ messages | map(attribute='role') | unique | sort | join(',') }} {{ [1, 2] | reverse | join }}", {"messages": MSGS}),
    ("dict_views", "{{ d.keys() | list }} {{ d.items() | length }} {{ 'T' if {}.items() else 'F' }} {{ d.values() }} {{ d.items() }} {{ 'a' in d.keys() }}", {"d": {"a": 1, "b": [2]}}),
    ("numeric_edges", "{{ 3 | round }} {{ 2.5 | round }} {{ 3.14159 | round(3) }} {{ 0 % -1.5 }} {{ -0.0 }} {{ 2.5 is odd }} {{ 3.0 is odd }} {{ u is callable }} {{ [0] * 2 + 2 * [1] }} {{ true + true }}", {}),
    ("ws_mixed", "  {%- if true %}\n\ta\n\t{%- endif %}\n  b  {#- c -#}  d\n{{- 'e' }}\n  {% for i in [1, 2] -%}\n   {{ i }}\n  {%- endfor %}\n", {}),
    ("lstrip_after_var_and_tabs", "{{ 'x' }}  {% if true %}y{% endif %}\n\t\t{% if true %}z{% endif %}\n  {{ 'v' }} {% if true %}w{% endif %}", {}),
    ("raw_with_ws", "a\n  {% raw -%}\n  {{ x }}\n  {%- endraw %}\nb", {}),
    ("comment_trim", "a\n{# c #}\nb\n  {#- c #}\nc\n{# multi\nline #}  \nd", {}),
    ("nested_namespace_macro", "{% set ns = namespace(out='') %}{% macro add(x) %}{{ x * 2 }}{% endmacro %}{% for i in range(3) %}{% set ns.out = ns.out ~ add(i) %}{% endfor %}{{ ns.out }}", {}),
]


def main():
    env = make_env()
    data = json.load(open(os.path.join(HERE, "conversations.json"), encoding="utf-8"))
    cases = []
    for name, template, variables in CONSTRUCTS:
        r = render(env, template, variables)
        cases.append({"name": "construct/" + name, "kind": "construct", "template": template, "variables": variables, **r})

    convs = data["conversations"]
    for tfile, conv_names in data["families"].items():
        source = open(os.path.join(HERE, "templates", tfile), encoding="utf-8").read()
        for conv_name in conv_names:
            conv = convs[conv_name]
            tools = data[conv["tools"]] if "tools" in conv else None
            for agp in (False, True):
                variables = {"messages": conv["messages"], "tools": tools, "documents": None, "add_generation_prompt": agp,
                             "bos_token": BOS, "eos_token": EOS, **conv.get("kwargs", {})}
                r = render(env, source, variables)
                cases.append({"name": f"chat/{tfile[:-6]}/{conv_name}/{'gen' if agp else 'nogen'}", "kind": "chat",
                              "template_file": tfile, "conversation": conv_name, "add_generation_prompt": agp, **r})

    out = {
        "generator": "render_golden.py",
        "jinja2_version": jinja2.__version__,
        "jinja2_path": os.path.dirname(jinja2.__file__),
        "now": NOW.isoformat(),
        "bos_token": BOS,
        "eos_token": EOS,
        "cases": cases,
    }
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    errors = sum(1 for c in cases if "error" in c)
    print(f"{len(cases)} cases ({errors} expected errors) with jinja2 {jinja2.__version__} from {out['jinja2_path']}", file=sys.stderr)


if __name__ == "__main__":
    main()
