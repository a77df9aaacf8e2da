# Yours: nexus created this file once and never touches it again.
def test_info(client):
{% set line = '    assert client.get("/api/info").json() == {"service": "' ~ cookiecutter.name ~ '"}' %}
{% if line|fits %}
{{ line }}
{% else %}
    assert client.get("/api/info").json() == {
        "service": "{{ cookiecutter.name }}"
    }
{% endif %}
