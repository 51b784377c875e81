"""``python -m medllama_fusion.demo``: write the synthetic demo dataset."""

from medllama_fusion.demo.command import main

main()
