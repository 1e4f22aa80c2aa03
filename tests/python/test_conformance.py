"""The community conformance suite (jupyter_kernel_test) against ferrolab.

Every attribute a Rust kernel can meet is set. IOPub is an XPUB socket that
welcomes each new subscriber with `iopub_welcome` (JEP 65); with subshells
(tests/python/test_subshells.py) the kernel speaks protocol 5.5.
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

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # The suite gives every cell 15 s; a kernel's first Rust cell builds the session crate,
        # which on a loaded 2-core machine can take longer. Run that first build here, once.
        msg_id = cls.kc.execute("0", store_history=False)
        reply = cls.kc.get_shell_msg(timeout=600)
        assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok", reply
        while True:
            msg = cls.kc.get_iopub_msg(timeout=60)
            if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"):
                break


class FerrolabIopubWelcome(jupyter_kernel_test.IopubWelcomeTests):
    kernel_name = KERNEL_NAME
    support_iopub_welcome = True


if __name__ == "__main__":
    unittest.main()
