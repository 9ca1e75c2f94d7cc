from django.contrib import messages as flash
from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import redirect, render

from example_project.demo.mailer import default_mailer
from example_project.demo.messages import demo_messages


@staff_member_required
def home(request):
    if request.method == "POST":
        with default_mailer() as connection:
            sent = connection.send_messages(demo_messages())
        flash.success(request, f"{sent} demo messages sent. Watch their dispositions change.")
        return redirect("admin:django_paubox_message_changelist")
    return render(request, "demo/home.html")
