"""The Paubox webhook endpoint (built out in the Dispositions issue)."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt
@require_POST
def webhook(request: HttpRequest, secret: str) -> HttpResponse:
    return HttpResponse(status=404)
