def main() -> int:
    print("trueup")
    return 0
