"""The community conformance suite (jupyter_kernel_test) against ferrolab.

Every attribute a Rust kernel can meet is set. IOPub is an XPUB socket that
welcomes each new subscriber with `iopub_welcome` (JEP 65); the kernel still
announces protocol 5.3, since 5.5 also needs subshells.
"""

import unittest

import jupyter_kernel_test

from conftest import KERNEL_NAME


class FerrolabConformance(jupyter_kernel_test.KernelTests):
    kernel_name = KERNEL_NAME
    language_name = "rust"
    file_extension = ".rs"

    code_hello_world = 'println!("hello, world");'
    code_stderr = 'eprintln!("written to stderr");'

    completion_samples = [
        {"text": "std::collections::HashM", "matches": {"HashMap"}},
        {"text": "let conformance_value = 1; conformance_val", "matches": {"conformance_value"}},
    ]
    complete_code_samples = ["1", "fn f() {}", "let x = vec![1, 2];", "%pwd", "'a'"]
    incomplete_code_samples = ["fn f() {", '"unterminated', "let v = vec![1,", "/* open comment"]
    invalid_code_samples = ["}", "fn f() { )", "let x = [1, 2);"]

    code_page_something = "%cd?"
    code_generate_error = "undefined_variable + 1"
    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": '"conformance".to_string()', "result": '"conformance"'},
    ]
    code_display_data = [
        {"code": 'ferrolab::display_html("<b>bold</b>")', "mime": "text/html"},
        {"code": 'ferrolab::display_svg("<svg xmlns=\\"http://www.w3.org/2000/svg\\"/>")', "mime": "image/svg+xml"},
    ]
    supported_history_operations = ("tail", "range", "search")
    code_history_pattern = "6 * *"
    code_inspect_sample = "std::vec::Vec"
    code_clear_output = "ferrolab::clear_output(false)"


class FerrolabIopubWelcome(jupyter_kernel_test.IopubWelcomeTests):
    kernel_name = KERNEL_NAME
    support_iopub_welcome = True


if __name__ == "__main__":
    unittest.main()
