"""Named message templates per company, with `{{variables}}`: checked when saved, rendered
when a send names one (issue 13).

A template is company data, not connection state, so it is not kept by the session actor:
`TemplateStore` keeps each company's templates in `<data>/<companyId>/templates.json`
(written whole, atomically, mode 0600), behind one lock, as the API keys are kept. A
rendered template is sent as plain text, so the outbox, idempotency and status all
apply to it unchanged.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from .clock import iso
from .payload import MAX_TEXT
from .phone import InvalidInput, validate_company_id

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,49})\s*\}\}")
MAX_TEMPLATES = 500           # per company
MAX_VARIABLES = 50            # per template
MAX_VALUE = 4096              # characters of one variable's value
FILE = "templates.json"


class TemplateNotFound(LookupError):
    pass


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInput("template name must be 1-64 letters, digits, '_' or '-'")
    return name


def variables_of(body: object) -> list[str]:
    """The variable names of a template body, in first-use order; InvalidInput for a body
    that is not a valid template (empty, too long, a `{{` or `}}` that is not a variable)."""
    if not isinstance(body, str) or not body.strip():
        raise InvalidInput("'body' is required: the template's text, with {{variables}}")
    if len(body) > MAX_TEXT:
        raise InvalidInput(f"'body' is longer than {MAX_TEXT} characters")
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("'body' is not valid Unicode (lone surrogate)") from None
    names = list(dict.fromkeys(_VARIABLE.findall(body)))
    rest = _VARIABLE.sub("", body)
    if "{{" in rest or "}}" in rest:
        bad = re.search(r"\{\{[^}]{0,40}\}?\}?|\}\}", rest)
        raise InvalidInput(f"template has a malformed placeholder near {bad.group(0)!r}: variables are "
                           "{{name}} with a name of letters, digits and '_' (not starting with a digit)")
    if len(names) > MAX_VARIABLES:
        raise InvalidInput(f"a template may use at most {MAX_VARIABLES} variables")
    return names


def render(body: str, values: object) -> str:
    """The body with every {{variable}} replaced; InvalidInput naming every missing one."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise InvalidInput("'variables' must be an object of name -> text")
    needed = variables_of(body)
    missing = [name for name in needed if name not in values]
    if missing:
        raise InvalidInput(f"missing template variables: {', '.join(missing)}")
    text: dict[str, str] = {}
    for name in needed:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidInput(f"variable {name!r} must be a string or a number")
        value = str(value)
        if len(value) > MAX_VALUE:
            raise InvalidInput(f"variable {name!r} is longer than {MAX_VALUE} characters")
        text[name] = value
    rendered = _VARIABLE.sub(lambda m: text[m.group(1)], body)
    if len(rendered) > MAX_TEXT:
        raise InvalidInput(f"the rendered template is longer than {MAX_TEXT} characters")
    return rendered


class TemplateStore:
    def __init__(self, data_dir: Path) -> None:
        self._dir = Path(data_dir)
        self._lock = threading.Lock()

    def list(self, company_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [self._shown(name, t) for name, t in sorted(self._read(company_id).items())]

    def get(self, company_id: str, name: str) -> dict[str, Any]:
        check_name(name)
        with self._lock:
            template = self._read(company_id).get(name)
        if template is None:
            raise TemplateNotFound(f"no template {name!r} for company {company_id}")
        return self._shown(name, template)

    def put(self, company_id: str, name: str, body: object, description: object = None) -> tuple[dict[str, Any], bool]:
        """Save (create or replace) a template; (its record, whether it is new)."""
        check_name(name)
        variables_of(body)
        if description is not None and (not isinstance(description, str) or len(description) > 500):
            raise InvalidInput("'description' must be a string of at most 500 characters")
        with self._lock:
            templates = self._read(company_id)
            created = name not in templates
            if created and len(templates) >= MAX_TEMPLATES:
                raise InvalidInput(f"a company may keep at most {MAX_TEMPLATES} templates")
            templates[name] = {"body": body, "description": description, "updatedAt": time.time()}
            self._write(company_id, templates)
            return self._shown(name, templates[name]), created

    def delete(self, company_id: str, name: str) -> bool:
        check_name(name)
        with self._lock:
            templates = self._read(company_id)
            if templates.pop(name, None) is None:
                return False
            self._write(company_id, templates)
            return True

    def render(self, company_id: str, name: str, values: object) -> str:
        return render(self.get(company_id, name)["body"], values)

    # ---- the file ----------------------------------------------------------------------

    def _path(self, company_id: str) -> Path:
        return self._dir / validate_company_id(company_id) / FILE

    def _read(self, company_id: str) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._path(company_id).read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items()
                if isinstance(k, str) and NAME.fullmatch(k) and isinstance(v, dict) and isinstance(v.get("body"), str)}

    def _write(self, company_id: str, templates: dict[str, dict[str, Any]]) -> None:
        path = self._path(company_id)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(templates, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @staticmethod
    def _shown(name: str, template: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "body": template["body"], "description": template.get("description"),
                "variables": variables_of(template["body"]), "updatedAt": iso(template.get("updatedAt"), ms=True)}
