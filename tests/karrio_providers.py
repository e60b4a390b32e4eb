"""Tracking answers of UPS, FedEx, USPS, Canada Post, Royal Mail, DPD and GLS, for tests/karrio_server.py.

Each provider's paths, authentication and bodies follow its public tracking API as karrio's
provider package speaks it (the request it builds, the fields its parser reads); the sample
bodies are written here. `provider_answer` answers a request to one of these APIs, or returns
None for a path that is not theirs. A shipment's body is in `server.shipments[code]` (made with
the functions below); an unknown number gets the provider's documented "not found" answer.
"""

from __future__ import annotations

import json
import re
import time
from email.message import Message
from xml.sax.saxutils import escape

TOKENS = {"ups": "ups-access-token", "fedex": "fedex-access-token", "usps": "usps-access-token",
          "gls": "gls-access-token", "dpd": "dpd-auth-token"}


def _bearer(headers: Message, provider: str) -> bool:
    return (headers.get("Authorization") or "") == f"Bearer {TOKENS[provider]}"


# --- sample bodies --------------------------------------------------------------------------------

def ups_shipment(code: str, activity: list[tuple[str, str, str, str, str]]) -> dict:
    """UPS Track API (GET /api/track/v1/details/CODE): activity (type, code, description, YYYYMMDD, HHMMSS), newest first."""
    return {"trackResponse": {"shipment": [{"inquiryNumber": code, "package": [{
        "trackingNumber": code, "deliveryDate": [], "packageAddress": [],
        "activity": [{"date": date, "time": time_, "status": {"type": type_, "code": status_code,
                                                              "description": description},
                      "location": {"address": {"city": "Louisville", "stateProvince": "KY", "country": "US"}}}
                     for type_, status_code, description, date, time_ in activity]}]}]}}


def fedex_result(code: str, events: list[tuple[str, str, str]]) -> dict:
    """One FedEx completeTrackResult: scan events (eventType, description, ISO date with offset), newest first."""
    return {"trackingNumber": code, "trackResults": [{
        "trackingNumberInfo": {"trackingNumber": code, "carrierCode": "FDXE"},
        "latestStatusDetail": {"code": events[0][0], "description": events[0][1]},
        "scanEvents": [{"date": date, "eventType": kind, "eventDescription": description,
                        "scanLocation": {"city": "MEMPHIS", "stateOrProvinceCode": "TN", "countryCode": "US"}}
                       for kind, description, date in events]}]}


def usps_shipment(code: str, status: str, events: list[tuple[str, str, str]]) -> dict:
    """USPS Tracking v3 (GET /tracking/v3/tracking/CODE?expand=DETAIL): events (eventType, code, UTC time)."""
    return {"trackingNumber": code, "status": status, "statusCategory": status,
            "trackingEvents": [{"eventType": kind, "eventCode": event_code, "eventTimestamp": stamp,
                                "eventCity": "NEW YORK", "eventState": "NY", "eventZIP": "10001",
                                "eventCountry": "US"} for kind, event_code, stamp in events]}


def canadapost_detail(pin: str, occurrences: list[tuple[str, str, str, str]]) -> str:
    """Canada Post track-v2 detail (GET /vis/track/pin/PIN/detail): (identifier, date, time, description), newest first."""
    events = "".join(
        f"<occurrence><event-identifier>{ident}</event-identifier><event-date>{date}</event-date>"
        f"<event-time>{time_}</event-time><event-time-zone>EST</event-time-zone>"
        f"<event-description>{escape(text)}</event-description><event-site>OTTAWA</event-site>"
        f"<event-province>ON</event-province></occurrence>" for ident, date, time_, text in occurrences)
    return (f'<?xml version="1.0" encoding="UTF-8"?><tracking-detail xmlns="http://www.canadapost.ca/ws/track-v2">'
            f"<pin>{pin}</pin><service-name>Expedited Parcels</service-name>"
            f"<significant-events>{events}</significant-events></tracking-detail>")


def royalmail_events(code: str, events: list[tuple[str, str, str]]) -> dict:
    """Royal Mail Tracking API v2 (GET /mailpieces/v2/ID/events): events (code, name, time with offset), newest first."""
    return {"mailPieces": {
        "mailPieceId": code, "carrierShortName": "RM", "carrierFullName": "Royal Mail Group Ltd",
        "summary": {"uniqueItemId": code, "lastEventCode": events[0][0], "lastEventName": events[0][1],
                    "lastEventDateTime": events[0][2], "statusCategory": "IN TRANSIT"},
        "estimatedDelivery": {"date": "2026-11-23"},
        "events": [{"eventCode": c, "eventName": name, "eventDateTime": when, "locationName": "Swindon MC"}
                   for c, name, when in events]}}


def dpd_tracking(code: str, infos: list[tuple[str, str, str]]) -> str:
    """DPD ParcelLifeCycleService 2.0 getTrackingData answer: statusInfo (status, text, date), oldest first."""
    rows = "".join(
        f"<statusInfo><status>{status}</status><label><content>{escape(text)}</content></label>"
        f"<description><content><content>{escape(text)}</content></content></description>"
        f"<statusHasBeenReached>true</statusHasBeenReached><isCurrentStatus>false</isCurrentStatus>"
        f"<location><content>Aschaffenburg (DE)</content></location><date><content>{date}</content></date>"
        f"</statusInfo>" for status, text, date in infos)
    return _soap(f'<ns2:getTrackingDataResponse xmlns:ns2="http://dpd.com/common/service/types/ParcelLifeCycleService/2.0">'
                 f"<trackingresult><shipmentInfo><parcelLabelNumber>{code}</parcelLabelNumber></shipmentInfo>"
                 f"{rows}</trackingresult></ns2:getTrackingDataResponse>")


def gls_parcel(code: str, status: str, events: list[tuple[str, str, str]]) -> dict:
    """One parcel of GLS Track and Trace (GET .../tracking/simple/trackids/IDS): events (code, text, time with offset)."""
    return {"requested": code, "unitno": code, "status": status, "statusDateTime": events[0][2],
            "events": [{"code": c, "description": text, "eventDateTime": when, "city": "Neuenstein",
                        "postalCode": "36286", "country": "DE"} for c, text, when in events]}


def _soap(body: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
            f"<soap:Body>{body}</soap:Body></soap:Envelope>")


# --- answering ------------------------------------------------------------------------------------

JSON, XML = "application/json", "application/xml"


def provider_answer(server, method: str, path: str, headers: Message, body: bytes):
    """(status, body, content type, extra headers) for a request to one of these APIs, else None."""
    known = server.shipments
    if method == "POST" and path in ("/security/v1/oauth/token", "/oauth/token", "/oauth2/v3/token", "/oauth2/v2/token"):
        provider = {"/security/v1/oauth/token": "ups", "/oauth/token": "fedex", "/oauth2/v3/token": "usps",
                    "/oauth2/v2/token": "gls"}[path]
        if getattr(server, "refuse_login", False):
            return 401, {"errors": [{"code": "NOT.AUTHORIZED.ERROR", "message": "The given client credentials were not valid."}],
                         "response": {"errors": [{"code": "250003", "message": "Invalid Access License number"}]}}, JSON, {}
        token = {"access_token": TOKENS[provider], "token_type": "Bearer", "expires_in": 14399}
        if provider == "ups":
            token.update(issued_at=str(int(time.time() * 1000)), status="approved")
        return 200, token, JSON, {}
    if m := re.fullmatch(r"/api/track/v1/details/([A-Za-z0-9-]+)", path):  # UPS
        if not _bearer(headers, "ups"):
            return 401, {"response": {"errors": [{"code": "250002", "message": "Invalid Authentication Information."}]}}, JSON, {}
        if m[1] in known:
            return 200, known[m[1]], JSON, {}
        return 404, {"response": {"errors": [{"code": "TW0001", "message": "Tracking Information Not Found"}]}}, JSON, {}
    if method == "POST" and path == "/track/v1/trackingnumbers":  # FedEx: several numbers per request
        if not _bearer(headers, "fedex"):
            return 401, {"errors": [{"code": "NOT.AUTHORIZED.ERROR", "message": "Access token expired."}]}, JSON, {}
        asked = [i["trackingNumberInfo"]["trackingNumber"] for i in json.loads(body)["trackingInfo"]]
        results = [known.get(code) or {"trackingNumber": code, "trackResults": [{
            "trackingNumberInfo": {"trackingNumber": code},
            "error": {"code": "TRACKING.TRACKINGNUMBER.NOTFOUND",
                      "message": "Tracking number cannot be found. Please correct the tracking number and try again."}}]}
            for code in asked]
        return 200, {"transactionId": "t-1", "output": {"completeTrackResults": results}}, JSON, {}
    if method == "POST" and path == "/track/v1/trackingdocuments":  # FedEx proof of delivery: not offered here
        return 404, {"errors": [{"code": "NOT.FOUND.ERROR", "message": "The resource was not found."}]}, JSON, {}
    if m := re.fullmatch(r"/tracking/v3/tracking/([A-Za-z0-9-]+)", path):  # USPS
        if not _bearer(headers, "usps"):
            return 401, {"error": {"code": "401", "message": "Unauthorized"}}, JSON, {}
        if m[1] in known:
            return 200, known[m[1]], JSON, {}
        return 404, {"apiVersion": "3.0.0", "error": {"code": "404", "message": "Tracking number not found", "errors": [
            {"status": "404", "code": "1001", "title": "Not found", "detail": "The tracking number was not found."}]}}, JSON, {}
    if m := re.fullmatch(r"/vis/track/pin/([A-Za-z0-9-]+)/detail", path):  # Canada Post
        if not (headers.get("Authorization") or "").startswith("Basic "):
            return 401, _cpc_message("E002", "AAA Authentication Failure"), XML, {}
        if m[1] in known:
            return 200, known[m[1]], XML, {}
        return 404, _cpc_message("004", "No Pin History"), XML, {}
    if m := re.fullmatch(r"/mailpieces/v2/([A-Za-z0-9-]+)/events", path):  # Royal Mail
        if not headers.get("X-IBM-Client-Id"):
            return 401, {"httpCode": 401, "httpMessage": "Unauthorized", "moreInformation": "Client id missing"}, JSON, {}
        if m[1] in known:
            return 200, known[m[1]], JSON, {}
        return 404, {"httpCode": 404, "httpMessage": "Not Found", "moreInformation": "Mail piece not found",
                     "errors": [{"errorCode": "E1142", "errorDescription": "Barcode reference isn't recognised",
                                 "errorCause": "The mail piece was not found", "errorResolution": "Check the barcode"}]}, JSON, {}
    if method == "POST" and path == "/soap/services/LoginService/V2_1":  # DPD login
        if getattr(server, "refuse_login", False):
            return 500, _soap('<soap:Fault><faultcode>soap:Server</faultcode><faultstring>Fault occured</faultstring>'
                              '<detail><ns1:authenticationFault xmlns:ns1="http://dpd.com/common/service/types/Authentication/2.0">'
                              "<errorCode>LOGIN_8</errorCode><errorMessage>The combination of user and password is invalid."
                              "</errorMessage></ns1:authenticationFault></detail></soap:Fault>"), XML, {}
        return 200, _soap('<ns2:getAuthResponse xmlns:ns2="http://dpd.com/common/service/types/LoginService/2.1"><return>'
                          f"<delisId>sandboxdpd</delisId><customerUid>sandboxdpd</customerUid><authToken>{TOKENS['dpd']}</authToken>"
                          "<depot>0163</depot><authTokenExpires>2099-01-01T00:00:00.000</authTokenExpires>"
                          "</return></ns2:getAuthResponse>"), XML, {}
    if method == "POST" and path == "/soap/services/ParcelLifeCycleService/V2_0":  # DPD tracking
        text = body.decode()
        code = re.search(r"<parcelLabelNumber>([^<]*)</parcelLabelNumber>", text)[1]
        if f"<authToken>{TOKENS['dpd']}</authToken>" not in text:
            return 500, _soap("<soap:Fault><faultcode>soap:Server</faultcode><faultstring>Fault occured</faultstring>"
                              "<detail><ns1:authenticationFault xmlns:ns1=\"http://dpd.com/common/service/types/Authentication/2.0\">"
                              "<errorCode>LOGIN_5</errorCode><errorMessage>The token is not valid.</errorMessage>"
                              "</ns1:authenticationFault></detail></soap:Fault>"), XML, {}
        if code in known:
            return 200, known[code], XML, {}
        return 200, _soap('<ns2:getTrackingDataResponse xmlns:ns2="http://dpd.com/common/service/types/ParcelLifeCycleService/2.0">'
                          "</ns2:getTrackingDataResponse>"), XML, {}
    if m := re.fullmatch(r"/track-and-trace-v1/tracking/simple/trackids/([A-Za-z0-9,-]+)", path):  # GLS
        if not _bearer(headers, "gls"):
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "Invalid token"}]}, JSON, {}
        parcels = [known.get(code) or {"requested": code, "errorCode": "NOT_FOUND", "errorMessage": "Parcel not found"}
                   for code in m[1].split(",")]
        return 200, {"parcels": parcels}, JSON, {}
    return None


def _cpc_message(code: str, text: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><messages xmlns="http://www.canadapost.ca/ws/messages">'
            f"<message><code>{code}</code><description>{escape(text)}</description></message></messages>")
