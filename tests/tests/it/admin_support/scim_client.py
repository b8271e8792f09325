#!/usr/bin/env python3
"""A SCIM 2.0 client, the way an identity provider (Okta, Entra ID) provisions: stdlib only.

usage: scim_client.py BASE_URL TOKEN COMMAND ARGS...
  create-user USERNAME          POST /scim/v2/Users
  find-user USERNAME            GET  /scim/v2/Users?filter=userName eq "USERNAME"
  get-user ID                   GET  /scim/v2/Users/ID
  deactivate ID                 PATCH /scim/v2/Users/ID  active=false (Entra's string form)
  delete-user ID                DELETE /scim/v2/Users/ID
  create-group NAME MEMBER_ID   POST /scim/v2/Groups
  add-member GROUP_ID USER_ID   PATCH /scim/v2/Groups/GROUP_ID add members
  remove-member GROUP_ID USER_ID PATCH /scim/v2/Groups/GROUP_ID remove members[value eq "…"]
  raw METHOD PATH [TOKEN]       any request, with another token

Prints {"status": <code>, "body": <JSON or null>}.
"""

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def call(base, token, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + token)
    request.add_header("Accept", "application/scim+json")
    if data is not None:
        request.add_header("Content-Type", "application/scim+json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    body = json.loads(text) if text else None
    return {"status": status, "body": body}


def main():
    base, token, command, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    if command == "create-user":
        result = call(base, token, "POST", "/scim/v2/Users", {
            "schemas": [USER],
            "userName": args[0],
            "name": {"givenName": "Test", "familyName": "User", "formatted": "Test User"},
            "emails": [{"primary": True, "value": args[0], "type": "work"}],
            "externalId": "idp-" + args[0],
            "active": True,
        })
    elif command == "find-user":
        query = urllib.parse.urlencode({"filter": 'userName eq "%s"' % args[0]})
        result = call(base, token, "GET", "/scim/v2/Users?" + query)
    elif command == "get-user":
        result = call(base, token, "GET", "/scim/v2/Users/" + args[0])
    elif command == "deactivate":
        result = call(base, token, "PATCH", "/scim/v2/Users/" + args[0], {
            "schemas": [PATCH],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
        })
    elif command == "delete-user":
        result = call(base, token, "DELETE", "/scim/v2/Users/" + args[0])
    elif command == "create-group":
        result = call(base, token, "POST", "/scim/v2/Groups", {
            "schemas": [GROUP],
            "displayName": args[0],
            "members": [{"value": args[1]}],
        })
    elif command == "add-member":
        result = call(base, token, "PATCH", "/scim/v2/Groups/" + args[0], {
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": args[1]}]}],
        })
    elif command == "remove-member":
        result = call(base, token, "PATCH", "/scim/v2/Groups/" + args[0], {
            "schemas": [PATCH],
            "Operations": [{"op": "remove", "path": 'members[value eq "%s"]' % args[1]}],
        })
    elif command == "raw":
        result = call(base, args[2] if len(args) > 2 else token, args[0], args[1])
    else:
        sys.exit("unknown command " + command)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
